"""Task functions for the upstream-endpoint interop test: stdlib only, because the upstream
endpoint's venv has no volley (functions travel by reference to this module)."""


def double(x):
    return 2 * x


def fail(message):
    raise RuntimeError(message)


def as_dict(n):
    return {"n": n, "squares": [i * i for i in range(n)]}
