"""`python -m pixelis.online ONLINE_DIR`: the update worker process (see `pixelis.online.worker`).

The signal handlers go in before torch and the model load (seconds), so a SIGTERM that arrives during start-up
still ends the worker cleanly (exit 0) instead of killing it.
"""

import signal
import sys
import threading

stop = threading.Event()
for signum in (signal.SIGTERM, signal.SIGINT):
    signal.signal(signum, lambda *_: stop.set())

from pixelis.online.worker import main  # noqa: E402  (after the handlers, on purpose)

sys.exit(main(stop=stop))
