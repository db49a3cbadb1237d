"""Changes that other packages must hear of inside the change's own transaction.

The audit trail (compliance) records each of these in the same transaction as the change,
so the entry commits or rolls back with it; billing gives a new tenant its subscription the
same way. The signals live here, below every package: the package that makes the change
sends, the one that reacts connects in its `init_app`, and neither imports the other.
Reactions that may run later, in their own transaction, are outbox subscribers instead
(core.events).
"""

from blinker import Namespace

_changes = Namespace()

# tenants: sender is the new Tenant.
tenant_created = _changes.signal("tenant-created")
# tenants: sender is the ApiKey; change="created"|"revoked"|"rolled", replacement=ApiKey|None.
api_key_changed = _changes.signal("api-key-changed")
# tenants: sender is the Member (or invite); see tenants.members for the keyword arguments.
member_changed = _changes.signal("member-changed")
# billing: sender is the Subscription; from_plan=, to_plan= (Plan rows).
plan_changed = _changes.signal("plan-changed")
# webhooks: sender is the WebhookEndpoint; change=, tenant_id=, before=, after=.
endpoint_changed = _changes.signal("webhook-endpoint-changed")
