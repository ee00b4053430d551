"""The agent server: an OpenAI-compatible chat-completions API over the policy and its pixel tools.

`protocol` (request checks, errors, response shapes) -> `app` (FastAPI endpoints) -> `batcher` (one thread
stepping a continuous rollout batch, optionally through the online engine) ; `server` wires them with uvicorn.
"""
