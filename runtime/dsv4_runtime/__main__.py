"""`python -m dsv4_runtime`: the same as the `dsv4-runtime` console script."""

from dsv4_runtime.cli import main

if __name__ == "__main__":
    main()
