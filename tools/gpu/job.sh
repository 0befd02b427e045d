#!/usr/bin/env bash
# The GPU job: tools/gpu/job.sh OUT_DIR [--job ensemble|li-full|boulis-full] [--budget MINUTES]
# FERKIT_GPU_DATA (default .gpu/fer2013.tar.gz) names the FER2013 archive (tools/gpu/pack_data.py);
# FERKIT_GPU_SMOKE=1 runs the same job on the CPU at toy scale. See docs/gpu.md.
set -euo pipefail
# No cd: OUT_DIR, --work and FERKIT_GPU_DATA are relative to where you run it (job.py finds
# the checkout from its own path).
exec "${PYTHON:-python3}" "$(dirname "$0")/job.py" "$@"
