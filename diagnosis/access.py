"""Who may see which case. Every case-scoped view goes through here.

Views never filter cases themselves: they call ``cases_for`` (or use
``CaseAccessMixin``), so a case outside a user's reach answers 404 everywhere
and its existence is not revealed.
"""
from functools import cached_property
from uuid import UUID

from django.db.models import Q, QuerySet
from django.shortcuts import get_object_or_404

from accounts.mixins import RoleRequiredMixin
from accounts.models import User
from diagnosis.models import Case, Scan, UploadBatch


def cases_for(user: User) -> QuerySet[Case]:
    """The cases ``user`` may see.

    - administrators (and superusers): every case;
    - technicians: the cases they created;
    - radiologists: cases assigned to them, and unassigned cases (the shared
      worklist any radiologist may pick up);
    - anyone else, inactive or anonymous users: none.
    """
    cases = Case.objects.select_related("patient", "created_by", "assigned_radiologist")
    if not user.is_authenticated or not user.is_active:
        return cases.none()
    if user.is_portal_admin:
        return cases
    if user.role == User.Role.TECHNICIAN:
        return cases.filter(created_by=user)
    if user.role == User.Role.RADIOLOGIST:
        return cases.filter(Q(assigned_radiologist=user) | Q(assigned_radiologist__isnull=True))
    return cases.none()


def get_case_for_user(user: User, pk: UUID | str) -> Case:
    """The case ``pk`` if ``user`` may see it, else Http404."""
    return get_object_or_404(cases_for(user), pk=pk)


def scans_for(user: User) -> QuerySet[Scan]:
    """Scans of the cases ``user`` may see."""
    return Scan.objects.filter(case__in=cases_for(user)).select_related("case")


def batches_for(user: User) -> QuerySet[UploadBatch]:
    """Upload batches of the cases ``user`` may see."""
    return UploadBatch.objects.filter(case__in=cases_for(user)).select_related(
        "case__patient", "uploaded_by"
    )


class CaseAccessMixin(RoleRequiredMixin):
    """Scope a view to the cases the user may see.

    Role and permission checks (403) run first, in ``RoleRequiredMixin``; then a
    case outside ``cases_for`` is a 404, before the view does any work. The case
    is loaded once per request from the ``case_url_kwarg`` URL part and is both
    ``self.case`` and, for detail and edit views, the view's object.
    """

    case_url_kwarg = "pk"

    def check_object_access(self) -> None:
        self.case  # noqa: B018 - loading it raises Http404 for outsiders

    @cached_property
    def case(self) -> Case:
        return get_case_for_user(self.request.user, self.kwargs[self.case_url_kwarg])

    def get_queryset(self) -> QuerySet[Case]:
        return cases_for(self.request.user)

    def get_object(self, queryset=None) -> Case:
        return self.case
