from azora_common.migrations import run_env
from azora_ledger.models import Base

run_env(Base.metadata)
