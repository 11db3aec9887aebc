# The guide's ShellFunction(return_dict=True) example (its `future` is the loop's `fut`).
import os

from volley import Executor, ShellFunction

func = ShellFunction("echo '{message}'", return_dict=True)
with Executor(endpoint_id=os.environ["VOLLEY_ENDPOINT_ID"]) as ex:
    for msg in ("hello", "hola", "bonjour"):
        fut = ex.submit(func, message=msg)
        res = fut.result()
        assert isinstance(res, dict)
        assert msg in res["stdout"]
        print(res["stdout"].strip(), res["returncode"])
