#!/usr/bin/env bash
# The GPU job: tools/gpu/job.sh OUT_DIR [--job ensemble|li-full|boulis-full] [--budget MINUTES]
# FERKIT_GPU_DATA (default .gpu/fer2013.tar.gz) names the FER2013 archive (tools/gpu/pack_data.py);
# FERKIT_GPU_SMOKE=1 runs the same job on the CPU at toy scale. See docs/gpu.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec "${PYTHON:-python3}" tools/gpu/job.py "$@"
