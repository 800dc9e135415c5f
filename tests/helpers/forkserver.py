"""A process that imports TensorFlow once and forks a fresh child per script run.

Most CLI tests check what only a process shows (exit status, the one-line
error on stderr, files written), but each fresh ``python run_scripts/x.py``
spends 5-7 CPU seconds importing TensorFlow, Keras and lvat_tf before it does
anything; the suite runs ~50 of them. This server imports them once; every
request forks a child that starts from that state, with its own argv,
environment, working directory, stdout/stderr files and exit status, and runs
the script as ``__main__``, so each run is still a separate process that
shares nothing with the others. Only the import is shared: no TensorFlow op
runs in the server before it forks (the eager context, thread pools and
devices are created in each child).

Protocol (one JSON object per line): the request ``{"script", "args", "env",
"cwd", "timeout", "out", "err"}`` on stdin; the reply ``{"rc"}`` on stdout
(-9 when the child ran past its timeout and was killed).
"""
import json
import os
import runpy
import signal
import sys
import time


def _child(req):
    os.chdir(req["cwd"])
    os.environ.clear()  # the request's whole environment, as subprocess would give it
    os.environ.update(req["env"])
    out = os.open(req["out"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    err = os.open(req["err"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(out, 1)
    os.dup2(err, 2)
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    sys.argv = [req["script"], *req["args"]]
    sys.path[0] = os.path.dirname(req["script"])
    code = 0
    try:
        runpy.run_path(req["script"], run_name="__main__")
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if not isinstance(e.code, (int, type(None))):
            sys.stderr.write(f"{e.code}\n")
    except BaseException:  # noqa: BLE001  (an uncaught error: traceback, exit 1, like python)
        import traceback

        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _wait(pid, timeout):
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return -9
        time.sleep(0.02)


def main():
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__)))), "run_scripts"))
    import tensorflow  # noqa: F401
    import keras  # noqa: F401
    import absl.app  # noqa: F401
    import importlib
    import pkgutil

    import lvat_tf

    for mod in pkgutil.walk_packages(lvat_tf.__path__, "lvat_tf."):
        importlib.import_module(mod.name)
    from tensorflow.python.eager import context

    # Forking is safe only while TensorFlow's runtime (thread pools, devices)
    # has not started; an import that ran an op would start it.
    if context.context()._context_handle is not None:
        sys.stdout.write(json.dumps({"ready": False, "why": "TensorFlow's runtime started "
                                     "during the imports"}) + "\n")
        sys.stdout.flush()
        return

    sys.stdout.write(json.dumps({"ready": True}) + "\n")
    sys.stdout.flush()
    for line in sys.stdin:
        req = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(req)
        rc = _wait(pid, req["timeout"])
        sys.stdout.write(json.dumps({"rc": rc}) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
