# The guide's "AMQP Port": Executor(amqp_port=...) overrides the port of the result stream.
# The guide uses 443; the local stack's broker listens on its own port, given here.
import os

from volley import Executor

with Executor(endpoint_id=os.environ["VOLLEY_ENDPOINT_ID"], amqp_port=int(os.environ["VOLLEY_AMQPS_PORT"])) as gce:
    print(gce.submit(pow, 2, 10).result())
