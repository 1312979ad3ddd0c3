"""What every API module needs: the master object and who is calling."""

from fastapi import Request

from .. import auth, users


def master_of(request: Request):
    return request.app.state.master


def token_of(request: Request):
    return auth.bearer(request.headers.get("authorization"))


def user_in(session, request):
    """The calling user, authenticated inside the caller's session."""
    return users.authenticate_user(session, token_of(request))


def user_of(request):
    """The calling user, from the token cache (a query only on a miss)."""
    master = master_of(request)
    return request.app.state.user_tokens.authenticate(master.db.read, token_of(request))


def admin_in(session, request):
    principal = user_in(session, request)
    users.require_admin(principal)
    return principal


def node_of(request):
    """The calling node (cached; touches the database only on a cache miss)."""
    master = master_of(request)
    return request.app.state.nodes.authenticate(master.db.read, token_of(request))
