"""The reference engine: DeepSeek-V4 end to end in PyTorch behind an OpenAI-compatible API.

Run with `python -m dsv4_runtime.reference --config tiny` (see `__main__.py`); README.md in this
folder lists the architecture choices and their sources.
"""
