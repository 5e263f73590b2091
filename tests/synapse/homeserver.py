# Runs Synapse for Grove's interop tests, and stops it when the test process goes away.
#
# Usage: python homeserver.py <homeserver.yaml> <directory to remove at exit>...
#
# The test process holds this program's stdin open for as long as it lives; when the pipe
# closes (the tests ended, or their process was killed), Synapse stops and its files go
# (unless GROVE_SYNAPSE_KEEP is set, to read its log after a failure).
import os
import runpy
import shutil
import sys
import threading

config, doomed = sys.argv[1], sys.argv[2:]


def stop_when_orphaned():
    sys.stdin.buffer.read()
    if not os.environ.get("GROVE_SYNAPSE_KEEP"):
        for directory in doomed:
            shutil.rmtree(directory, ignore_errors=True)
    os._exit(0)


threading.Thread(target=stop_when_orphaned, daemon=True).start()
sys.argv = ["synapse.app.homeserver", "--config-path", config]
runpy.run_module("synapse.app.homeserver", run_name="__main__", alter_sys=True)
