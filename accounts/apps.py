from django.apps import AppConfig
from django.db.models.signals import post_migrate


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Accounts"

    def ready(self) -> None:
        from accounts.roles import ensure_role_groups

        # post_migrate rather than a data migration: permissions only exist once
        # every app's post_migrate has created them, and re-running on each migrate
        # picks up permissions that later migrations add.
        post_migrate.connect(ensure_role_groups, dispatch_uid="accounts.ensure_role_groups")
