"""Roles mapped onto Django groups and permissions.

Each role has one group. The group holds the permissions the views check, so an
administrator can widen what a role may do in the Django admin (Groups). The
defaults below are (re)granted on every ``migrate``; to take a default away for
good, change ``ROLE_PERMISSIONS`` rather than the group in the admin.
"""
from django.contrib.auth.models import Group, Permission
from django.db.models import Q

from accounts.models import User

ROLE_GROUPS: dict[str, str] = {
    User.Role.RADIOLOGIST: "Radiologists",
    User.Role.TECHNICIAN: "Technicians",
    User.Role.ADMIN: "Administrators",
}

# "app_label.codename" strings, as in user.has_perm().
ROLE_PERMISSIONS: dict[str, set[str]] = {
    User.Role.TECHNICIAN: {
        "diagnosis.view_patient",
        "diagnosis.add_patient",
        "diagnosis.change_patient",
        "diagnosis.view_case",
        "diagnosis.add_case",
        "diagnosis.change_case",
        "diagnosis.view_scan",
        "diagnosis.add_scan",
        "diagnosis.view_caseevent",
        "diagnosis.view_review",
    },
    User.Role.RADIOLOGIST: {
        "diagnosis.view_patient",
        "diagnosis.view_case",
        "diagnosis.view_scan",
        "diagnosis.view_caseevent",
        "diagnosis.view_review",
        "diagnosis.add_review",
        # After a model update, for example; the earlier results are kept.
        "diagnosis.rerun_analysis",
    },
}
# Administrators get every permission of these apps except signing off reviews,
# which stays with radiologists.
ADMIN_APPS = ("accounts", "auth", "diagnosis", "mlcore", "axes")
ADMIN_EXCLUDED = {"diagnosis.add_review", "diagnosis.change_review"}


def _permissions(names: set[str]) -> list[Permission]:
    query = Q()
    for name in names:
        app_label, codename = name.split(".", 1)
        query |= Q(content_type__app_label=app_label, codename=codename)
    return list(Permission.objects.filter(query)) if names else []


def _admin_permissions() -> list[Permission]:
    perms = Permission.objects.filter(content_type__app_label__in=ADMIN_APPS).select_related(
        "content_type"
    )
    return [p for p in perms if f"{p.content_type.app_label}.{p.codename}" not in ADMIN_EXCLUDED]


def ensure_role_groups(**kwargs) -> None:
    """Create the role groups and grant their default permissions (idempotent).

    Connected to ``post_migrate``. It only adds: permissions an administrator
    granted on top of the defaults are kept.
    """
    for role, group_name in ROLE_GROUPS.items():
        group, _ = Group.objects.get_or_create(name=group_name)
        if role == User.Role.ADMIN:
            perms = _admin_permissions()
        else:
            perms = _permissions(ROLE_PERMISSIONS[role])
        if perms:
            group.permissions.add(*perms)


def sync_role_group(user: User) -> None:
    """Put ``user`` in their role's group and out of the other role groups.

    Groups that are not role groups are left alone, so an administrator can still
    give one person extra rights through an extra group.
    """
    wanted = ROLE_GROUPS[user.role]
    other = [name for name in ROLE_GROUPS.values() if name != wanted]
    user.groups.remove(*Group.objects.filter(name__in=other))
    group, _ = Group.objects.get_or_create(name=wanted)
    user.groups.add(group)
