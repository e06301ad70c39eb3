"""cases_for(): the single place that decides who sees which case."""
from django.contrib.auth.models import AnonymousUser

from diagnosis.access import cases_for
from tests.factories import make_case, make_user


def test_administrator_sees_every_case(admin_user, alice, dave):
    cases = {make_case(created_by=alice), make_case(created_by=dave)}
    assert set(cases_for(admin_user)) == cases


def test_superuser_sees_every_case(alice):
    root = make_user("root", role="technician", is_superuser=True)
    case = make_case(created_by=alice)
    assert list(cases_for(root)) == [case]


def test_technician_sees_the_cases_they_opened(alice, dave):
    mine = make_case(created_by=alice)
    make_case(created_by=dave)
    assert list(cases_for(alice)) == [mine]


def test_radiologist_sees_assigned_and_unassigned_cases(alice, bob, charlie):
    to_bob = make_case(created_by=alice, assigned_radiologist=bob)
    pool = make_case(created_by=alice)
    to_charlie = make_case(created_by=alice, assigned_radiologist=charlie)
    assert set(cases_for(bob)) == {to_bob, pool}
    assert to_charlie not in cases_for(bob)


def test_deactivated_and_anonymous_users_see_nothing(alice):
    make_case(created_by=alice)
    alice.is_active = False
    assert not cases_for(alice).exists()
    assert not cases_for(AnonymousUser()).exists()
