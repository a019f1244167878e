"""`python -m dsv4_operator`: run the operator with settings from `DSV4_OPERATOR_*` variables."""

from dsv4_operator.handlers import run
from dsv4_operator.settings import OperatorSettings

if __name__ == "__main__":
    run(OperatorSettings.from_env())
