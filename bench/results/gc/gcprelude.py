import gc, atexit, sys, time
_t = {}
_acc = {0: [0, 0.0], 1: [0, 0.0], 2: [0, 0.0]}
def _cb(phase, info):
    if phase == "start":
        _t["s"] = time.perf_counter()
    else:
        a = _acc[info["generation"]]; a[0] += 1; a[1] += time.perf_counter() - _t["s"]
gc.callbacks.append(_cb)
atexit.register(lambda: print("GCSTATS", {g: (n, round(s*1000, 1)) for g, (n, s) in _acc.items()}, file=sys.stderr))
import signal
signal.signal(signal.SIGUSR2, lambda *a: print("GCSTATS", {g: (n, round(s*1000, 1)) for g, (n, s) in _acc.items()}, file=sys.stderr, flush=True))
