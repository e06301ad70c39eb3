from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.urls import reverse_lazy
from django.views.generic import CreateView, ListView, UpdateView, View

from accounts.forms import (
    LoginForm,
    PortalPasswordChangeForm,
    PortalPasswordResetForm,
    PortalSetPasswordForm,
    UserCreateForm,
    UserFilterForm,
    UserUpdateForm,
)
from accounts.mixins import RoleRequiredMixin
from accounts.models import User
from accounts.services import AccountError, do_create_user, do_set_user_active, do_update_user


class LoginView(auth_views.LoginView):
    authentication_form = LoginForm
    redirect_authenticated_user = True


class PasswordChangeView(auth_views.PasswordChangeView):
    form_class = PortalPasswordChangeForm
    success_url = reverse_lazy("accounts:password-change-done")


class PasswordResetView(auth_views.PasswordResetView):
    form_class = PortalPasswordResetForm
    email_template_name = "registration/password_reset_email.txt"
    subject_template_name = "registration/password_reset_subject.txt"
    success_url = reverse_lazy("accounts:password-reset-done")


class PasswordResetConfirmView(auth_views.PasswordResetConfirmView):
    form_class = PortalSetPasswordForm
    success_url = reverse_lazy("accounts:password-reset-complete")


class UserListView(RoleRequiredMixin, ListView):
    """In-app user management for administrators."""

    permission_required = "accounts.view_user"
    model = User
    paginate_by = 25
    template_name = "accounts/user_list.html"
    context_object_name = "users"

    def get_queryset(self) -> QuerySet[User]:
        users = User.objects.order_by("-is_active", "username")
        self.filter_form = UserFilterForm(self.request.GET or None)
        if self.filter_form.is_valid():
            if q := self.filter_form.cleaned_data["q"]:
                users = users.filter(
                    Q(username__icontains=q)
                    | Q(first_name__icontains=q)
                    | Q(last_name__icontains=q)
                    | Q(email__icontains=q)
                )
            if role := self.filter_form.cleaned_data["role"]:
                users = users.filter(role=role)
        return users

    def get_context_data(self, **kwargs):
        return super().get_context_data(filter_form=self.filter_form, **kwargs)


class UserCreateView(RoleRequiredMixin, CreateView):
    permission_required = "accounts.add_user"
    form_class = UserCreateForm
    template_name = "accounts/user_form.html"

    def form_valid(self, form: UserCreateForm) -> HttpResponse:
        data = form.cleaned_data
        user = do_create_user(
            username=data["username"],
            password=data["password1"],
            role=data["role"],
            email=data["email"],
            first_name=data["first_name"],
            last_name=data["last_name"],
            created_by=self.request.user,
        )
        messages.success(
            self.request, f"User {user.username} created as {user.get_role_display().lower()}."
        )
        return redirect("accounts:user-list")


class UserUpdateView(RoleRequiredMixin, UpdateView):
    permission_required = "accounts.change_user"
    model = User
    form_class = UserUpdateForm
    template_name = "accounts/user_form.html"
    context_object_name = "managed_user"

    def form_valid(self, form: UserUpdateForm) -> HttpResponse:
        # The form has already written the new values onto the instance; reload
        # it so the service compares against what is stored.
        user = User.objects.get(pk=self.object.pk)
        try:
            do_update_user(user=user, changed_by=self.request.user, **form.cleaned_data)
        except AccountError as exc:
            form.add_error(None, str(exc))
            return self.form_invalid(form)
        messages.success(self.request, f"User {user.username} updated.")
        return redirect("accounts:user-list")


class UserSetActiveView(RoleRequiredMixin, View):
    """Deactivate or reactivate a user (POST only)."""

    permission_required = "accounts.change_user"
    http_method_names = ["post"]
    active = False

    def post(self, request: HttpRequest, pk) -> HttpResponse:
        user = get_object_or_404(User, pk=pk)
        try:
            do_set_user_active(user=user, active=self.active, changed_by=request.user)
        except AccountError as exc:
            messages.error(request, str(exc))
        else:
            state = "reactivated" if self.active else "deactivated"
            messages.success(request, f"User {user.username} {state}.")
        return redirect("accounts:user-list")
