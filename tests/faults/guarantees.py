"""What Volley guarantees under concurrency and bad luck, each with the test that shows it.

docs/reliability.md renders this list (``make faults`` writes the page), and
tests/test_guarantees_doc.py checks that every test named here exists and that the page shows
every line, so the page never promises what no test checks."""

from __future__ import annotations

# (what can go wrong, what Volley does, the test: "tests/<file>.py::<test function>")
GUARANTEES: list[tuple[str, str, str]] = [
    ("a second process reloads a task group while the first still waits",
     "one watcher reads the group's stream (an exclusive consumer); the other resolves its "
     "futures from the service on a slow poll, and both get every result",
     "tests/test_result_stream_sharing.py::test_a_second_process_reloading_the_group_and_the_first_both_get_every_result"),
    ("two Clients of one process spell the service address differently and share a task group",
     "addresses are compared in one spelling; where they still differ the second watcher polls "
     "the service, and every future resolves",
     "tests/test_result_stream_sharing.py::test_two_clients_spelling_the_service_two_ways_share_a_task_group"),
    ("the AMQP port is closed, or takes the connection and never answers",
     "futures resolve from the service, with one warning naming the broker's address and "
     "`amqp_port`",
     "tests/test_result_stream_sharing.py::test_an_unreachable_amqp_port_gets_results_from_the_service_with_one_warning"),
    ("the group's result queue overflows (drop-head) while its watcher is connected",
     "a stream quiet for 10 s with futures open is checked against the service; the dropped "
     "results resolve",
     "tests/test_result_stream_sharing.py::test_results_dropped_by_a_full_result_queue_reach_a_connected_watcher"),
    ("a result is read over REST (after an outage, while polling, in `reload_tasks`)",
     "it resolves exactly as on the stream: cancelled stays cancelled, the error code decides "
     "what `retry_on` retries",
     "tests/test_outcome.py::test_the_stream_and_the_stored_document_give_the_same_outcome"),
]


def markdown() -> str:
    rows = "\n".join(f"| {what} | {does} | `{test}` |" for what, does, test in GUARANTEES)
    return ("| when | Volley | test |\n| --- | --- | --- |\n" + rows)
