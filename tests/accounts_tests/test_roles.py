"""Roles are carried by groups, and groups by permissions an admin can adjust."""
from django.contrib.auth.models import Group

from accounts.models import User
from accounts.roles import ROLE_GROUPS, ensure_role_groups
from tests.factories import make_user


def group_names(user: User) -> set[str]:
    return set(user.groups.values_list("name", flat=True))


def test_each_role_group_exists_after_migrate(db):
    assert set(Group.objects.values_list("name", flat=True)) >= set(ROLE_GROUPS.values())


def test_a_new_user_joins_their_role_group(alice, bob, admin_user):
    assert group_names(alice) == {"Technicians"}
    assert group_names(bob) == {"Radiologists"}
    assert group_names(admin_user) == {"Administrators"}


def test_changing_the_role_moves_the_user_and_keeps_extra_groups(alice):
    extra = Group.objects.create(name="Research")
    alice.groups.add(extra)
    alice.role = User.Role.RADIOLOGIST
    alice.save()
    assert group_names(alice) == {"Radiologists", "Research"}


def test_role_permissions(alice, bob, admin_user):
    assert alice.has_perms(["diagnosis.add_patient", "diagnosis.add_case", "diagnosis.add_scan"])
    assert not alice.has_perm("diagnosis.add_review")
    assert bob.has_perms(["diagnosis.view_case", "diagnosis.add_review"])
    assert not bob.has_perm("diagnosis.add_scan")
    assert admin_user.has_perms(["accounts.add_user", "diagnosis.change_case", "diagnosis.add_scan"])
    # Sign-off stays with radiologists.
    assert not admin_user.has_perm("diagnosis.add_review")
    assert not admin_user.can_review and bob.can_review


def test_only_administrators_get_the_django_admin(alice, admin_user):
    assert not alice.is_staff
    assert admin_user.is_staff
    admin_user.role = User.Role.TECHNICIAN
    admin_user.save()
    assert not admin_user.is_staff


def test_an_administrator_can_widen_a_role_and_migrate_keeps_it(db):
    technicians = Group.objects.get(name="Technicians")
    technicians.permissions.add(*Group.objects.get(name="Radiologists").permissions.filter(codename="add_review"))
    ensure_role_groups()
    assert technicians.permissions.filter(codename="add_review").exists()


def test_ensure_role_groups_restores_missing_defaults(db):
    Group.objects.get(name="Radiologists").permissions.clear()
    ensure_role_groups()
    assert make_user(role=User.Role.RADIOLOGIST).has_perm("diagnosis.add_review")


def test_createsuperuser_makes_an_administrator(db):
    root = User.objects.create_superuser("root", "root@example.org", "x")
    assert root.role == User.Role.ADMIN and root.is_staff and root.is_portal_admin
