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
    ("the service answers 503 to a check the watcher makes between waits",
     "the check is made again later; the stream stays up",
     "tests/test_watcher.py::test_a_busy_service_during_a_check_of_a_quiet_stream_costs_the_stream_nothing"),
    ("a result is read over REST (after an outage, while polling, in `reload_tasks`)",
     "it resolves exactly as on the stream: cancelled stays cancelled, the error code decides "
     "what `retry_on` retries",
     "tests/test_outcome.py::test_the_stream_and_the_stored_document_give_the_same_outcome"),
    # the database (SQLite and PostgreSQL)
    ("a request meets a locked or busy database",
     "503 `DATABASE_UNAVAILABLE` with `Retry-After`; nothing changes; logged once",
     "tests/test_db_busy.py::test_a_write_while_the_database_is_locked_is_503_with_retry_after_and_changes_nothing"),
    ("a read is blocked by a table lock (PostgreSQL)",
     "503 as well, not a hang or a 500",
     "tests/test_db_busy.py::test_a_read_behind_a_table_lock_is_503_too"),
    ("a lock is held for long",
     "a request waits at most 30 s for it (under the SDK's 60 s HTTP timeout) unless the database "
     "URL sets its own",
     "tests/test_db_busy.py::test_the_lock_wait_is_30_s_unless_the_database_url_sets_its_own"),
    ("an Executor submits while the database is locked",
     "the SDK resends after `Retry-After`; the future resolves once the lock is gone, the task "
     "stored and queued once",
     "tests/test_db_busy.py::test_an_executor_submit_made_while_the_database_is_locked_runs_once_it_is_released"),
    ("the SDK is answered 503 with `Retry-After`",
     "it sends again no sooner than asked, and never past `$VOLLEY_SERVICE_RETRY_FOR`",
     "tests/test_http.py::test_a_503_is_sent_again_no_sooner_than_its_retry_after"),
    ("the connection is lost during a commit",
     "504 (the commit may have happened), which the SDK resends only for idempotent requests",
     "tests/test_db_busy.py::test_connection_lost_during_the_commit_is_504_not_503"),
    ("an endpoint delete cannot commit",
     "its broker user and queues are untouched (the broker side follows the commit)",
     "tests/test_db_busy.py::test_endpoint_delete_while_the_database_is_locked_leaves_the_broker_side_untouched"),
    ("an endpoint delete fails after its broker side is gone",
     "the endpoint stays locked, and sending DELETE again finishes it",
     "tests/test_db_busy.py::test_endpoint_delete_whose_last_commit_fails_stays_locked_and_finishes_when_sent_again"),
    ("an endpoint lock cannot commit",
     "its broker user is not revoked",
     "tests/test_db_busy.py::test_endpoint_lock_while_the_database_is_locked_leaves_the_broker_side_untouched"),
    ("an endpoint registration cannot commit",
     "no broker user or queue is made",
     "tests/test_db_busy.py::test_registration_while_the_database_is_locked_makes_no_broker_user_or_queue"),
    # the endpoint's disk, the outbox, logs
    ("the broker refuses a result while the endpoint's disk is full",
     "the result is held in memory and re-sent on the shared back-off; it reaches the client once "
     "the broker accepts it, without a restart; one log line",
     "tests/test_result_disk_full.py::test_result_refused_with_disk_full_arrives_once_the_broker_accepts"),
    ("an endpoint's task queue is full with many submissions waiting in the outbox",
     "a round reads at most a batch and logs one summary line; nothing lost or doubled",
     "tests/test_outbox_rounds.py::test_rounds_with_a_full_task_queue_touch_a_batch_and_log_a_line"),
    ("the broker is down with a backlog in the outbox",
     "a round does a bounded amount of work and logging; the backlog is published once it is back",
     "tests/test_outbox_rounds.py::test_rounds_during_a_broker_outage_touch_a_batch_and_log_a_line"),
    ("one endpoint's task queue is full with a large backlog, beside tasks for other endpoints",
     "a round reads a batch's worth of rows, walking neither that backlog nor finished tasks "
     "(PostgreSQL's own row counts; SQLite's query plan)",
     "tests/test_outbox_rounds.py::test_a_blocked_endpoints_backlog_is_not_walked_by_every_round"),
    ("the service connects to PostgreSQL (PgBouncer refuses an `options` startup parameter)",
     "it sends no `options` startup parameter; a statement still waits at most 30 s for a lock",
     "tests/test_db_busy.py::test_the_lock_wait_is_30_s_unless_the_database_url_sets_its_own"),
    ("a backlog larger than a batch",
     "is published batch after batch in one round, oldest submission first",
     "tests/test_outbox_rounds.py::test_the_backlog_is_published_in_batches_not_all_in_one_read"),
    ("a user has more tasks queued than the per-user cap",
     "429 `OUTBOX_FULL` naming the limit and the setting; nothing stored; other users unaffected",
     "tests/test_outbox_rounds.py::test_submissions_past_the_queued_task_cap_are_429_and_store_nothing"),
    ("the SDK is answered 429 `OUTBOX_FULL`",
     "it waits and sends the same submission again; it goes through once, when there is room",
     "tests/test_outbox_rounds.py::test_the_sdk_waits_out_a_full_outbox_and_its_submission_goes_through"),
    ("a daemon logs for long",
     "its log rotates (10 MiB x 5 by default), stays 0600, and its stderr follows the rotation",
     "tests/test_log_rotation.py::test_a_supervised_daemon_rotates_its_log_and_its_stderr_follows"),
    ("a detached endpoint logs for long",
     "its log rotates too",
     "tests/test_log_rotation.py::test_a_detached_endpoint_log_rotates"),
    # transport security
    ("the service is https with a private CA",
     "the SDK's REST calls verify it with the configured CA file (argument, `$VOLLEY_CA_FILE`, "
     "`config.json`), and so does `volley tasks`",
     "tests/test_client_tls.py::test_the_client_verifies_the_service_with_its_ca_file"),
    ("a CA file cannot be read",
     "a clear error naming it and the fix",
     "tests/test_client_tls.py::test_a_ca_file_that_cannot_be_read_is_named"),
    ("someone holding the shared broker credentials puts a result in your result queue, with or "
     "without a forged `user_id`",
     "it is dead-lettered unread and never deserialized; the genuine result still arrives once, "
     "on both transports",
     "tests/test_result_sender_check.py::test_a_result_forged_into_another_tenants_queue_is_refused_unread"),
    ("shared-credential mode is configured with the service's own broker user for tenants",
     "the service refuses to start",
     "tests/test_result_sender_check.py::test_shared_mode_refuses_to_hand_tenants_the_services_own_broker_user"),
    ("shared-credential mode on a database of two users (one broker user for all would let one "
     "forge the other's results through the router)",
     "the service refuses to start, naming the users and `broker_management_url`; shared mode "
     "serves one user",
     "tests/test_result_sender_check.py::test_shared_mode_refuses_to_start_on_a_database_of_two_users"),
    ("a token for a second user is asked for while the service runs in shared-credential mode",
     "refused with the same explanation; the one user's tokens work as before",
     "tests/test_result_sender_check.py::test_shared_mode_refuses_a_token_for_a_second_user_and_keeps_serving_the_first"),
    ("two new users are asked for at once in shared-credential mode (PostgreSQL)",
     "one is made, the other refused",
     "tests/test_result_sender_check.py::test_two_users_asked_for_at_once_in_shared_mode_make_one"),
    ("a CA file is set and the service's certificate is signed by a CA of the default bundle",
     "REST trusts both, for the Client and `volley tasks`, also behind an HTTPS proxy",
     "tests/test_client_tls.py::test_the_ca_file_is_trusted_besides_the_default_bundle"),
    ("a certificate does not verify behind a proxy",
     "the clear error at once, not retried as an outage",
     "tests/test_client_tls.py::test_behind_a_proxy_a_certificate_that_does_not_verify_is_named_at_once"),
    ("a consumer nacks some deliveries, then acks through the last",
     "the channel lives and nothing comes back, on both transports",
     "tests/test_transport_user_id.py::test_a_multiple_ack_after_nacks_settles_the_rest_and_the_channel_lives"),
    # the result router and the purge
    ("a cancel commits between the router's read of a task and its UPDATE (SQLite has no row locks)",
     "the router forwards only what its own conditional UPDATE stored: the SDK sees the cancel, "
     "never the result that lost",
     "tests/test_router_races.py::test_a_cancel_committed_between_read_and_update_wins_and_the_sdk_sees_only_it"),
    ("two service processes store different results of one task at once",
     "only the stored one reaches the SDK",
     "tests/test_router_races.py::test_a_result_stored_by_another_router_between_read_and_update_is_the_one_forwarded"),
    ("the broker always refuses a result's forward",
     "the message is dead-lettered after 5 tries while other results flow; the result stays "
     "stored and REST serves it",
     "tests/test_router_poison.py::test_a_result_whose_forward_is_always_refused_is_dead_lettered_after_max_tries"),
    ("a result batch holds a result whose forward is refused",
     "the batch is dead-lettered once; its other results are stored and forwarded exactly once",
     "tests/test_router_poison.py::test_a_result_batch_with_a_refused_forward_keeps_the_rest_and_is_dead_lettered_once"),
    ("handling a message always raises",
     "it is dead-lettered and blocks no other tenant's results",
     "tests/test_router_poison.py::test_a_message_whose_handling_always_raises_is_dead_lettered_and_blocks_nobody"),
    ("the database is locked for longer than those 5 tries",
     "an outage is waited out, not counted against the messages; no result is lost",
     "tests/test_router_poison.py::test_a_database_locked_through_more_than_max_tries_loses_no_result"),
    ("an unfinished task is older than the TTL",
     "the purge keeps it and REST serves it (the TTL runs from completion); it completes normally",
     "tests/test_purge.py::test_an_unfinished_task_older_than_the_ttl_is_kept_served_and_completed"),
    ("a submission whose task is unfinished is older than the TTL",
     "it is kept (the outbox and a restore rebuild the task's message from it)",
     "tests/test_purge.py::test_a_submission_whose_task_is_unfinished_outlives_the_ttl"),
    ("an endpoint with old unfinished tasks is deleted",
     "its tasks fail with `EndpointDeleted`, however old",
     "tests/test_purge.py::test_deleting_the_endpoint_fails_its_unfinished_tasks_however_old"),
    # cancel
    ("a task is cancelled behind more tasks than the endpoint holds (20,200 queued)",
     "it never runs: the endpoint writes the cancel to `cancelled_tasks/` before acking the "
     "notice, and drops the task whenever it arrives",
     "tests/test_cancel_durable.py::test_cancels_of_more_tasks_than_any_memory_bound_all_hold"),
    ("the endpoint is SIGKILLed after a cancel and before the task came",
     "after the restart the task never runs",
     "tests/test_cancel_durable.py::test_a_cancel_survives_an_endpoint_kill_before_the_task_came"),
    ("a task is cancelled while its endpoint is down",
     "the service answers cancelled at once, and the endpoint applies the notice before it runs "
     "its first task",
     "tests/test_cancel_durable.py::test_a_cancel_sent_while_the_endpoint_is_down_applies_before_its_first_task"),
    ("the endpoint's disk refuses a cancel notice",
     "the notice stays unacked (redelivered after a kill); the cancel applies in memory meanwhile",
     "tests/test_cancel_durable.py::test_a_cancel_notice_is_acked_only_once_recorded"),
    ("the cancel record is torn by a crash mid-write",
     "the torn line is cut and the rest reads back",
     "tests/test_cancel_record.py::test_a_torn_last_line_is_cut_and_what_follows_reads_back"),
    ("`cancel()` of tasks whose endpoint is stopped",
     "answers True at once (no 10 s wait), and the tasks never run",
     "tests/test_cancel_at_once.py::test_cancel_answers_without_waiting_for_the_endpoint"),
    ("`Executor.map` is given up early",
     "the rest are cancelled at once, one request per 1,000 tasks, waiting for no endpoint",
     "tests/test_cancel_at_once.py::test_map_abandoned_cancels_the_rest_at_once"),
    ("a cancel reaches the service",
     "it cancels the tasks itself only of an endpoint that said it stopped; a live, silent or "
     "never-heard-from endpoint decides (it may be running the task); a repeat gets the same "
     "answer (SQLite and PostgreSQL)",
     "tests/test_cancel_route.py::test_only_an_endpoint_that_said_it_stopped_has_its_tasks_cancelled_by_the_service"),
    ("the service cannot reach the broker to send a cancel notice",
     "503 and nothing is marked cancelled (the notice goes before the commit); sent again, it "
     "goes through",
     "tests/test_cancel_route.py::test_a_cancel_whose_notice_cannot_reach_the_broker_changes_nothing"),
]


def markdown() -> str:
    rows = "\n".join(f"| {what} | {does} | `{test}` |" for what, does, test in GUARANTEES)
    return ("| when | Volley | test |\n| --- | --- | --- |\n" + rows)
