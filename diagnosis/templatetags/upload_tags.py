"""The case page's "Uploads" card, rendered in place so CaseDetailView needs no extra context."""
from django import template

from diagnosis.models import Case
from diagnosis.progress import case_uploads_context

register = template.Library()


@register.inclusion_tag("diagnosis/partials/case_uploads.html")
def case_uploads(case: Case) -> dict:
    """Recent upload batches of ``case`` with their analysis progress (polls while running)."""
    return case_uploads_context(case)
