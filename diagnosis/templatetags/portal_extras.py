from django import template
from django.http import HttpRequest

register = template.Library()


@register.simple_tag(takes_context=True)
def page_url(context, page_number: int) -> str:
    """The current URL's query string with ``page`` replaced, so paging keeps the filters."""
    request: HttpRequest = context["request"]
    query = request.GET.copy()
    query["page"] = page_number
    return f"?{query.urlencode()}"
