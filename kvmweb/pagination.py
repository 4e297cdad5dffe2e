from django.core.paginator import Paginator


def paginate(request, queryset, per_page):
    """One page of a list, and the request's other filters to keep in the
    pager's links (templates/_pager.html)."""
    page = Paginator(queryset, per_page).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    return {"page": page, "query": query.urlencode()}
