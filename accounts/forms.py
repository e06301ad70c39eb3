from crispy_forms.helper import FormHelper
from crispy_forms.layout import Submit
from django import forms
from django.contrib.auth.forms import (
    AuthenticationForm,
    PasswordChangeForm,
    PasswordResetForm,
    SetPasswordForm,
    UserCreationForm,
)

from accounts.models import User


class CrispyFormMixin:
    """Give a form a crispy helper with one submit button; templates call {% crispy form %}."""

    submit_label = "Save"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.helper = FormHelper()
        self.helper.add_input(Submit("submit", self.submit_label, css_class="btn-primary"))


class LoginForm(CrispyFormMixin, AuthenticationForm):
    submit_label = "Sign in"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.helper.form_class = "login-form"
        self.helper.inputs[0].field_classes = "btn btn-primary w-100"


class PortalPasswordChangeForm(CrispyFormMixin, PasswordChangeForm):
    submit_label = "Change password"


class PortalPasswordResetForm(CrispyFormMixin, PasswordResetForm):
    submit_label = "Send reset link"


class PortalSetPasswordForm(CrispyFormMixin, SetPasswordForm):
    submit_label = "Set new password"


class UserCreateForm(CrispyFormMixin, UserCreationForm):
    submit_label = "Create user"

    class Meta(UserCreationForm.Meta):
        model = User
        fields = ("username", "first_name", "last_name", "email", "role")


class UserUpdateForm(CrispyFormMixin, forms.ModelForm):
    submit_label = "Save changes"

    class Meta:
        model = User
        fields = ("first_name", "last_name", "email", "role")


class UserFilterForm(forms.Form):
    q = forms.CharField(required=False, label="Search")
    role = forms.ChoiceField(required=False, choices=[("", "All roles"), *User.Role.choices])
