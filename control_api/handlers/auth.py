"""Accounts, sessions and the caller's profile."""

from __future__ import annotations

from aiohttp import web

from control_api.handlers import api, client_ip, services, user_agent
from control_api.schemas import (
    LoginIn,
    PasswordChangeIn,
    ProfileIn,
    RefreshIn,
    RegisterIn,
    TokenPairOut,
    UserOut,
)
from control_api.services.auth import Principal

# The original VideoConf API's profile path, which its web, mobile and desktop clients call.
LEGACY_PROFILE = "/api/auth/profile"


@api.route(
    "POST", "/api/auth/register", summary="Create an account and sign in", tags="auth",
    body=RegisterIn, response=TokenPairOut, status=201, auth=False, errors=(409, 422, 429),
)
async def register(request: web.Request, body: RegisterIn) -> TokenPairOut:
    return await services(request).auth.register(
        email=body.email,
        password=body.password,
        display_name=body.display_name,
        timezone=body.timezone,
        client_ip=client_ip(request),
        user_agent=user_agent(request),
    )


@api.route(
    "POST", "/api/auth/login", summary="Sign in with email and password", tags="auth",
    body=LoginIn, response=TokenPairOut, auth=False, errors=(401, 422, 429),
)
async def login(request: web.Request, body: LoginIn) -> TokenPairOut:
    return await services(request).auth.login(
        email=body.email,
        password=body.password,
        client_ip=client_ip(request),
        user_agent=user_agent(request),
    )


@api.route(
    "POST", "/api/auth/refresh", summary="Exchange a refresh token for a new token pair", tags="auth",
    body=RefreshIn, response=TokenPairOut, auth=False, errors=(401, 422),
)
async def refresh(request: web.Request, body: RefreshIn) -> TokenPairOut:
    """The refresh token is rotated: the one sent stops working. Sending a rotated token again
    signs out every session that descends from the same login."""
    return await services(request).auth.refresh(body.refresh_token, user_agent(request))


@api.route(
    "POST", "/api/auth/logout", summary="Sign out this session", tags="auth",
    body=RefreshIn, status=204, auth=False, errors=(401, 422),
)
async def logout(request: web.Request, body: RefreshIn) -> None:
    """Revokes the refresh token's whole family (this login on this device)."""
    await services(request).auth.logout(body.refresh_token)


@api.route(
    "GET", "/api/users/me", summary="The caller's profile", tags="users",
    response=UserOut, errors=(401,), aliases=(LEGACY_PROFILE,),
)
async def get_profile(request: web.Request, user: Principal) -> UserOut:
    return await services(request).auth.profile(user.id)


@api.route(
    "PUT", "/api/users/me", summary="Replace the caller's profile", tags="users",
    body=ProfileIn, response=UserOut, errors=(401, 422), aliases=(LEGACY_PROFILE,),
)
async def put_profile(request: web.Request, user: Principal, body: ProfileIn) -> UserOut:
    return await services(request).auth.update_profile(user.id, body.display_name, body.timezone)


@api.route(
    "POST", "/api/users/me/password", summary="Change the password", tags="users",
    body=PasswordChangeIn, response=TokenPairOut, errors=(401, 403, 422, 429),
)
async def change_password(request: web.Request, user: Principal, body: PasswordChangeIn) -> TokenPairOut:
    """Signs out every session and every access token, then returns a fresh pair for this one."""
    return await services(request).auth.change_password(
        user.id, body.current_password, body.new_password, user_agent(request)
    )
