"""MongoDB replica-set settings: majority writes with a time limit, majority reads, retryable
reads and writes (MONGODB_URI's own options win), and the admin's global stats allowed to read
from a secondary with bounded staleness."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pymongo import ReadPreference
from pymongo.read_preferences import SecondaryPreferred

from config import ConfigError
from taskapi.extensions import get_db, replica_set_options, stats_read_preference
from taskapi.services import stats


def test_the_client_writes_to_a_majority_and_reads_majority_committed_data(app):
    with app.app_context():
        client = get_db().client
        assert client.write_concern.document["w"] == "majority"
        assert client.write_concern.document["wtimeout"] == 5000
        assert client.read_concern.level == "majority"
        assert client.options.retry_reads
        # The embedded server's URI turns retryable writes off (devserver.mongo_uri says why): kept.
        assert "retryWrites=false" in app.config["MONGODB_URI"] and client.options.retry_writes is False


def test_options_in_mongodb_uri_win_over_the_settings():
    config = {"MONGODB_URI": "mongodb+srv://u:p@cluster0.example.mongodb.net/taskapi?retryWrites=true&w=1&wtimeoutMS=900",
              "MONGODB_WRITE_CONCERN": "majority", "MONGODB_WTIMEOUT_MS": 5000, "MONGODB_READ_CONCERN": "majority"}
    # w=1 in the URI: reads at the writes' level (a majority read could miss a write just acknowledged).
    assert replica_set_options(config) == {"readConcernLevel": "local", "retryReads": True}
    config["MONGODB_URI"] = "mongodb://a:1,b:2,c:3/taskapi?replicaSet=rs0"
    config["MONGODB_WRITE_CONCERN"] = "2"
    assert replica_set_options(config) == {"w": 2, "wTimeoutMS": 5000, "readConcernLevel": "local",
                                           "retryWrites": True, "retryReads": True}  # w=2 of 3 may not be a majority
    config["MONGODB_WRITE_CONCERN"] = "majority"
    assert replica_set_options(config)["readConcernLevel"] == "majority"


def test_global_stats_may_read_a_secondary_and_a_user_s_stats_never(app, monkeypatch):
    assert stats_read_preference(app.config) == SecondaryPreferred(max_staleness=90)
    assert stats_read_preference({**app.config, "MONGODB_STATS_READ_PREFERENCE": "primary"}) == ReadPreference.PRIMARY
    seen = []
    from pymongo.collection import Collection

    original = Collection.aggregate

    def recording(self, pipeline, *args, **kwargs):
        seen.append(self.read_preference)
        return original(self, pipeline, *args, **kwargs)

    monkeypatch.setattr(Collection, "aggregate", recording)  # observes the real call, which still runs
    with app.app_context():
        stats.dashboard(owner=None, now=datetime.now(UTC))
        stats.dashboard(owner="6b1423e7b676e80fb8bb056f", now=datetime.now(UTC))
    assert seen == [SecondaryPreferred(max_staleness=90), ReadPreference.PRIMARY]


@pytest.mark.parametrize(("settings", "message"), [
    ({"MONGODB_WRITE_CONCERN": "most"}, "MONGODB_WRITE_CONCERN"),
    ({"MONGODB_READ_CONCERN": "snapshot"}, "MONGODB_READ_CONCERN"),
    ({"MONGODB_STATS_READ_PREFERENCE": "secondaryFirst"}, "MONGODB_STATS_READ_PREFERENCE"),
])
def test_replica_set_settings_are_checked(make_app, settings, message):
    with pytest.raises(ConfigError, match=message):
        make_app(**settings)


def test_a_write_no_majority_confirms_in_time_is_a_503_that_says_so(make_app):
    """w=2 on a one-node replica set: no second member can confirm (a WTimeoutError on a set
    whose other members are down, UnsatisfiableWriteConcern here); both are write-concern errors."""
    from tests.helpers import PASSWORD, assert_problem

    client = make_app(MONGODB_WRITE_CONCERN="2", MONGODB_WTIMEOUT_MS="200").test_client()
    refused = client.post("/api/v1/auth/register", json={"email": "w2@example.com", "password": PASSWORD})
    assert_problem(refused, 503)
    assert "enough members of its replica set" in refused.get_json()["detail"]
