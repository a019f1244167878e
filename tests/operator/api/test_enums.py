from dsv4_operator.api.v1alpha1 import enums


def test_gpu_type_names_are_lowercase_with_memory() -> None:
    for name in enums.GPU_TYPE_NAMES:
        assert name == name.lower()
        assert name.endswith("gb")
        assert name.rsplit("-", 1)[1][:-2].isdigit()


def test_enum_values_are_unique() -> None:
    for values in (enums.GPU_TYPE_NAMES, enums.WEIGHTS_FORMATS, enums.MODEL_NAMES):
        assert len(set(values)) == len(values)
