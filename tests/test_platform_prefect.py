"""The shared door to Prefect: what it relies on in Prefect, checked against Prefect itself."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest
from prefect.utilities.callables import parameter_schema

from scriptflow_prefect.platform import prefect_names
from scriptflow_prefect.platform.prefect import flow_parameter_schema


@pytest.mark.parametrize(
    "entrypoint",
    [prefect_names.ENTRYPOINT, prefect_names.DIGEST_ENTRYPOINT, prefect_names.CLEAN_ENTRYPOINT],
)
def test_it_reads_a_flows_parameter_schema_from_its_entrypoint_as_prefect_would(entrypoint):
    module, function = entrypoint.split(":")
    flow = getattr(importlib.import_module(module), function)
    assert flow_parameter_schema(entrypoint) == parameter_schema(flow.fn).model_dump_for_openapi()


def test_it_reads_the_schema_without_importing_the_flow():
    code = (
        "import sys\n"
        "from scriptflow_prefect.platform.prefect import flow_parameter_schema\n"
        "from scriptflow_prefect.platform.prefect_names import ENTRYPOINT\n"
        "schema = flow_parameter_schema(ENTRYPOINT)\n"
        "assert 'script_id' in schema['properties'], schema\n"
        "assert 'scriptflow_prefect.flows.run_script' not in sys.modules\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
