"""The DeepSeek-V4 worker runtime: what every pod of a `DeepSeekV4Deployment` runs.

`dsv4-runtime <args>` (`cli`) takes the operator's plan as explicit arguments (`config`:
`RuntimeConfig.to_args()` / `from_args()`, the operator↔runtime contract), reads the pod's place
in its LeaderWorkerSet group (`distributed`), checks the machine (`preflight`), builds the
engine's command lines (`engine`, `vllm_args`; `launch`) and supervises the engine (`supervisor`)
behind an admin server with `/health`, `/ready` and `/metrics` (`server`, `metrics`). The runtime
never re-plans and never imports vLLM. `reference/` is the CPU reference engine.
"""
