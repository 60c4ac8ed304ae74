"""Task counts per owner (the quota's counters, `task_counts`), from the tasks that exist."""


def upgrade(db):
    for row in db.tasks.aggregate([{"$group": {"_id": "$owner", "n": {"$sum": 1}}}]):
        db.task_counts.update_one({"_id": row["_id"]}, {"$set": {"n": row["n"]}}, upsert=True)
