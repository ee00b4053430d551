"""Fixtures of the serve tests: the attribute queries and a plain server over the SFT-trained tiny model."""

import pytest

from serve_helpers import SERVE_SETTINGS, start_server


@pytest.fixture(scope="session")
def attribute_samples(attribute_suite_dir):
    from pixelis.core.trajectory import read_jsonl

    return read_jsonl(attribute_suite_dir / "test.jsonl")


@pytest.fixture(scope="module")
def plain_server(tmp_path_factory, online_model_dir):
    server = start_server(tmp_path_factory.mktemp("plain_server"), online_model_dir, SERVE_SETTINGS)
    yield server
    assert server.stop() == 0, server.log()[-3000:]
