from azora_common.migrations import run_env
from azora_enrollment.models import Base

run_env(Base.metadata)
