"""On the embedded SecantusDB, keep only the task indexes its query plan uses: (owner, sort key, _id).

SecantusDB rewrites every index entry of a document on each update (about 0.3 ms per index,
measured) and narrows a query by owner and one range of an index's next field only, so the six
status and tag indexes cost every write and help no read there. MongoDB keeps all eleven.
Written out rather than read from the model, so this step does the same whenever it runs.
"""

KEEP = {"_id_", "tasks_created_at", "tasks_updated_at", "tasks_priority_rank", "tasks_due_key_asc",
        "tasks_due_key_desc"}


def upgrade(db):
    if "secantusVersion" not in db.client.admin.command("buildInfo"):
        return
    for name in list(db.tasks.index_information()):
        if name not in KEEP:
            db.tasks.drop_index(name)
