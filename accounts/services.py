"""State changes for user accounts. Views validate input, then call these."""
import logging

from django.db import transaction

from accounts.models import User

logger = logging.getLogger(__name__)


class AccountError(Exception):
    """A requested account change that is not allowed; the message is shown to the user."""


@transaction.atomic
def do_create_user(
    *,
    username: str,
    password: str,
    role: str,
    created_by: User | None,
    email: str = "",
    first_name: str = "",
    last_name: str = "",
) -> User:
    """Create an active user with ``role``; saving puts them in the role's group."""
    user = User(
        username=username, email=email, first_name=first_name, last_name=last_name, role=role
    )
    user.set_password(password)
    user.save()
    logger.info("User %s (%s) created by %s", user.username, role, created_by)
    return user


@transaction.atomic
def do_update_user(*, user: User, changed_by: User, **fields: str) -> User:
    """Change a user's name, e-mail or role."""
    if user.pk == changed_by.pk and fields.get("role", user.role) != user.role:
        raise AccountError("You cannot change your own role.")
    for name, value in fields.items():
        setattr(user, name, value)
    user.save()
    logger.info("User %s updated by %s: %s", user.username, changed_by, sorted(fields))
    return user


@transaction.atomic
def do_set_user_active(*, user: User, active: bool, changed_by: User) -> User:
    """Deactivate (or reactivate) a user. A deactivated user can no longer sign in.

    Users are never deleted: cases and reviews keep pointing at who did what.
    Raises AccountError when an administrator tries to deactivate themselves,
    which could leave the portal without anyone able to manage it.
    """
    if not active and user.pk == changed_by.pk:
        raise AccountError("You cannot deactivate your own account.")
    user.is_active = active
    user.save(update_fields=["is_active"])
    logger.info("User %s %s by %s", user.username, "activated" if active else "deactivated", changed_by)
    return user
