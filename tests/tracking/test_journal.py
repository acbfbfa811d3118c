from idhhpc.tracking.journal import Journal


def test_cursor_survives_reopen_and_only_pending_ops_replay(tmp_path):
    journal = Journal(tmp_path)
    for step in range(3):
        journal.append({"op": "log_metrics", "run": "k", "step": step})
    journal.mark_done(journal.pending()[0])

    reopened = Journal(tmp_path)
    assert [op["step"] for op in reopened.pending()] == [1, 2]
    assert reopened.count_pending() == 2


def test_fully_replayed_journal_is_truncated_and_numbering_continues(tmp_path):
    journal = Journal(tmp_path)
    journal.append({"op": "set_tags", "run": "k"})
    journal.mark_done(journal.pending()[0])
    assert not journal.path.exists()
    journal.append({"op": "set_tags", "run": "k"})
    assert Journal(tmp_path).pending()[0]["seq"] == 2


def test_torn_last_line_is_skipped_and_later_ops_survive(tmp_path):
    journal = Journal(tmp_path)
    journal.append({"op": "set_tags", "run": "k"})
    with open(journal.path, "a") as fh:
        fh.write('{"op": "log_metr')
    reopened = Journal(tmp_path)
    reopened.append({"op": "end_run", "run": "k"})
    assert [op["op"] for op in Journal(tmp_path).pending()] == ["set_tags", "end_run"]


def test_spooled_artifact_is_a_copy_removed_after_replay(tmp_path):
    source = tmp_path / "roc.png"
    source.write_text("v1")
    journal = Journal(tmp_path / "spool")
    copy = journal.spool_artifact(source)
    journal.append({"op": "log_artifact", "run": "k", "spooled_path": str(copy)})
    source.write_text("v2")
    assert copy.read_text() == "v1"
    journal.mark_done(journal.pending()[0])
    assert not copy.exists()


def test_run_ids_persist(tmp_path):
    Journal(tmp_path).remember_run("key", "abc123")
    assert Journal(tmp_path).run_ids == {"key": "abc123"}
