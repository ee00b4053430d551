"""The original design's four usage examples, run as written."""

import re
import subprocess
import sys

from pixelis.core.curriculum import CurriculumManager

EXAMPLE_3 = '''
import logging
from pixelis.core.tracing import setup_logging, TracedOperation
setup_logging(use_tracing=True, use_colors=True)
logger = logging.getLogger(__name__)
with TracedOperation("my_operation", "MyComponent") as op:
    logger.info(f"Processing with trace {op.trace_id}")
'''

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def test_example_3_application_logger_prints_trace_id_and_component(tmp_path):
    script = tmp_path / "example3.py"
    script.write_text(EXAMPLE_3 + "print(op.trace_id)\n")
    result = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=True
    )
    trace_id = result.stdout.strip()
    (line,) = result.stderr.splitlines()
    assert re.fullmatch(r"[0-9a-f]{32}", trace_id)
    assert "\x1b[32mINFO\x1b[0m" in line  # use_colors: the level name is coloured, the other fields are not
    fields = rf"\d{{4}}-\d\d-\d\d [\d:,]+ - __main__ - INFO - \[{trace_id}\|MyComponent\] - (.*)"
    match = re.fullmatch(fields, ANSI.sub("", line))
    assert match, line
    assert match.group(1) == f"Processing with trace {trace_id}"


def test_example_4_curriculum_manager_from_a_config_dict():
    manager = CurriculumManager(
        {"curriculum": {"smoothing_window_size": 3, "patience_cycles": 2, "cooldown_cycles": 3}}
    )
    config = manager.config
    assert (config.smoothing_window_size, config.patience_cycles, config.cooldown_cycles) == (3, 2, 3)
