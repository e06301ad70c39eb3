from collections.abc import Collection

from django.contrib.auth.mixins import AccessMixin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponseBase


class RoleRequiredMixin(AccessMixin):
    """Let a view through only for signed-in users whose role and permissions allow it.

    Anonymous users are redirected to the login page; a signed-in user who lacks
    the role or permission gets 403 instead of a login redirect loop.

    ``permission_required``: permissions the user must all have ("app.codename").
    ``allowed_roles``: if set, the user's role must be one of these as well. Use it
    only where the role itself matters (a review is signed by a radiologist), since
    a permission can be adjusted in the admin and a role gate cannot.
    """

    permission_required: str | Collection[str] = ()
    allowed_roles: Collection[str] = ()

    def get_permission_required(self) -> tuple[str, ...]:
        if isinstance(self.permission_required, str):
            return (self.permission_required,)
        return tuple(self.permission_required)

    def has_role_access(self, user) -> bool:
        if self.allowed_roles and not user.has_role(*self.allowed_roles):
            return False
        return user.has_perms(self.get_permission_required())

    def dispatch(self, request: HttpRequest, *args, **kwargs) -> HttpResponseBase:
        if not request.user.is_authenticated:
            return self.handle_no_permission()
        if not self.has_role_access(request.user):
            raise PermissionDenied
        self.check_object_access()
        return super().dispatch(request, *args, **kwargs)

    def check_object_access(self) -> None:
        """Hook: raise Http404 for an object outside the user's reach.

        Runs before the handler, so nothing (form validation, image decoding) is
        done for a request that is going to be refused anyway.
        """
