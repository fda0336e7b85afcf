from azora_common.migrations import run_env
from tests.common.sample_app import metadata

run_env(metadata)
