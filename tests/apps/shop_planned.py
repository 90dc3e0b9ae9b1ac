"""The deployment's configuration of the shop's workers, not the shop's code: given to Celery
with ``celery -A tests.apps.shop --config tests.apps.shop_planned worker --autoscale=4,1 ...``,
it makes Celery's autoscaler adaptflow's planned one. Celery's loader reads this module beneath
the settings the app sets itself (tests/apps/shop.py is not changed); each worker's stage comes
from its node name (``enrich@%h``) or ``ADAPTFLOW_STAGE``."""

worker_autoscaler = "adaptflow.runtime.autoscaler:PlannedAutoscaler"
