"""A small ETL pipeline as an ordinary Celery app (parse -> validate -> [repair] -> aggregate ->
write) whose tasks do real work on generated CSV uploads: the user app of adaptflow's live
examples and tests. See README.md in this directory; it imports nothing of adaptflow."""
