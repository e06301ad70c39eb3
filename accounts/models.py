import uuid

from django.contrib.auth.models import AbstractUser, UserManager
from django.db import models


class PortalUserManager(UserManager):
    def create_superuser(self, username, email=None, password=None, **extra_fields):
        # A superuser is an administrator; without this, `createsuperuser` would
        # produce a "technician" with every permission, which reads wrongly in the UI.
        extra_fields.setdefault("role", User.Role.ADMIN)
        return super().create_superuser(username, email, password, **extra_fields)


class User(AbstractUser):
    """A person who signs in to the portal.

    The role decides which group the user is in (see ``accounts.roles``), and the
    group carries the permissions the views check. Changing the role in the admin or
    in the in-app user page moves the user to the matching group on save.
    """

    class Role(models.TextChoices):
        RADIOLOGIST = "radiologist", "Radiologist"
        TECHNICIAN = "technician", "Technician"
        ADMIN = "admin", "Administrator"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    role = models.CharField(
        max_length=20,
        choices=Role.choices,
        default=Role.TECHNICIAN,
        help_text="Decides what the user may do: technicians register patients and upload "
        "scans, radiologists review cases, administrators manage everything but sign-off.",
    )

    objects = PortalUserManager()

    class Meta:
        ordering = ("username",)

    def __str__(self) -> str:
        return self.get_full_name() or self.username

    def save(self, *args, **kwargs) -> None:
        # Administrators need the Django admin; nobody else does.
        self.is_staff = self.role == self.Role.ADMIN or self.is_superuser
        super().save(*args, **kwargs)
        update_fields = kwargs.get("update_fields")
        # Logins save only last_login; skip the group queries then.
        if update_fields is None or "role" in update_fields:
            from accounts.roles import sync_role_group

            sync_role_group(self)

    @property
    def display_name(self) -> str:
        return str(self)

    def has_role(self, *roles: str) -> bool:
        return self.is_active and self.role in roles

    @property
    def is_radiologist(self) -> bool:
        return self.has_role(self.Role.RADIOLOGIST)

    @property
    def is_technician(self) -> bool:
        return self.has_role(self.Role.TECHNICIAN)

    @property
    def is_portal_admin(self) -> bool:
        """Administrators and superusers see every case and manage users."""
        return self.is_active and (self.role == self.Role.ADMIN or self.is_superuser)

    @property
    def can_review(self) -> bool:
        """Sign-off is a clinical act: only radiologists, and only with the permission."""
        return self.is_radiologist and self.has_perm("diagnosis.add_review")

    @property
    def role_context(self) -> str:
        """Bootstrap colour for the role badge."""
        return {
            self.Role.RADIOLOGIST: "info",
            self.Role.TECHNICIAN: "secondary",
            self.Role.ADMIN: "dark",
        }.get(self.role, "light")
