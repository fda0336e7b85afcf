from azora_common.migrations import run_env
from azora_pricing.models import Base

run_env(Base.metadata)
