"""Auth: registration, login, token refresh and revocation, the caller's own account."""

from __future__ import annotations

from flask import url_for

from taskapi.http.auth import current_claims, current_user_id
from taskapi.http.blueprint import Blueprint
from taskapi.http.limits import (
    client_ip,
    email_alone,
    ip_and_email,
    ip_and_identity,
    login_account_rate,
    login_rate,
    register_rate,
    reset_address_rate,
)
from taskapi.schemas.auth import (
    AcceptedSchema,
    LoginSchema,
    PasswordChangeSchema,
    PasswordResetConfirmSchema,
    PasswordResetRequestSchema,
    RegisterSchema,
    TokenPairSchema,
    UpdateMeSchema,
    UserSchema,
)
from taskapi.services import auth, tokens

blp = Blueprint("auth", __name__, description="Registration, tokens and the caller's account.")


@blp.route("/register", methods=["POST"])
@blp.limit(register_rate, key=client_ip)
@blp.arguments(RegisterSchema())
@blp.response(201, UserSchema(), headers={"Location": {"description": "/api/v1/users/{id}", "schema": {"type": "string"}}})
@blp.problem(409, "An account with this email already exists.")
def register(body):
    """Create an account (role `user`).

    The email is trimmed and lower-cased and must be unused (409 otherwise); the password is 8
    to 128 characters and is stored as an argon2id hash. Limited per client IP
    (RATELIMIT_REGISTER).
    """
    user = auth.register(**body)
    return user, 201, {"Location": url_for("users.get_user", user_id=str(user["_id"]))}


@blp.route("/login", methods=["POST"])
@blp.limit(login_rate, key=client_ip)
@blp.limit(login_account_rate, key=ip_and_email)
@blp.arguments(LoginSchema())
@blp.response(200, TokenPairSchema())
@blp.problem(401, "Wrong email or password, or a deactivated account (one answer for all).")
def login(body):
    """Exchange credentials for an access token (15 min) and a refresh token (30 days).

    Unknown email, wrong password and a deactivated account all get the same 401 after the same
    work. Each login starts a session; limited per IP and per IP and email (RATELIMIT_LOGIN,
    RATELIMIT_LOGIN_ACCOUNT).
    """
    user, generation = auth.authenticate(**body)
    return tokens.issue_session(str(user["_id"]), generation, user["role"])


@blp.route("/password-reset", methods=["POST"])
@blp.limit(login_rate, key=client_ip)
@blp.limit(login_account_rate, key=ip_and_email)
@blp.limit(reset_address_rate, key=email_alone)
@blp.arguments(PasswordResetRequestSchema())
@blp.response(202, AcceptedSchema())
def request_password_reset(body):
    """Ask for a password-reset email; 202 whether or not the account exists.

    An active account with this email gets one email holding a single-use token (valid
    PASSWORD_RESET_TTL_SECONDS, 30 min by default) in a link (PASSWORD_RESET_URL). Only the
    token of the newest email works. Unknown and deactivated addresses get nothing, and the
    answer is the same, in the same time: the request only queues the email, and the
    notification worker decides when it sends it. Limited like login, and per address from
    any IP (RATELIMIT_PASSWORD_RESET_ADDRESS, 5 an hour).
    """
    auth.request_password_reset(email=body["email"])
    return {"detail": "If an active account has this email, a reset link is on its way."}, 202


@blp.route("/password-reset/confirm", methods=["POST"])
@blp.limit(login_rate, key=client_ip)
@blp.arguments(PasswordResetConfirmSchema())
@blp.response(204)
def confirm_password_reset(body):
    """Set a new password with the emailed token; every token of the account stops working.

    The token works once, until it expires, and only if no newer reset email was sent; a used,
    expired, replaced or unknown token is 422 on `token`. Like a password change, every
    session of the account ends: log in with the new password. Limited like login.
    """
    auth.confirm_password_reset(**body)


@blp.route("/refresh", methods=["POST"])
@blp.auth_required(refresh=True)
@blp.response(200, TokenPairSchema())
def refresh():
    """Rotate: the presented refresh token stops working; presenting it again revokes the session.

    Send the refresh token as the bearer token. The answer is a new pair; keep the new refresh
    token. A spent refresh token ends the whole session (reuse means theft), and a deactivated
    or deleted account cannot refresh.
    """
    return auth.refresh(current_claims())


@blp.route("/logout", methods=["POST"])
@blp.auth_required()
@blp.response(204)
def logout():
    """Revoke this access token and its whole login session, on every worker at once.

    The session's refresh token stops working too. Other sessions of the user (other devices)
    are not affected; see logout-all.
    """
    tokens.revoke_session(current_claims())


@blp.route("/logout-all", methods=["POST"])
@blp.auth_required()
@blp.response(204)
def logout_all():
    """Revoke every token of the caller issued before now (all devices).

    Every access and refresh token of the user, on every device and every server, stops working
    at once; the next login works.
    """
    auth.logout_all(user_id=current_user_id())


@blp.route("/me", methods=["GET"])
@blp.auth_required()
@blp.response(200, UserSchema())
def get_me():
    """The caller's account.

    Read from the database (not from the token), so it shows the current name and role.
    """
    return auth.current_user(current_user_id())


@blp.route("/me", methods=["PATCH"])
@blp.auth_required()
@blp.arguments(UpdateMeSchema())
@blp.response(200, UserSchema())
def update_me(body):
    """Change the caller's display name.

    Only `name` can be changed here; the email, role and active flag are not the caller's to
    change.
    """
    return auth.update_profile(user=auth.current_user(current_user_id()), **body)


@blp.route("/password", methods=["POST"])
@blp.limit(login_rate, key=client_ip)
@blp.limit(login_account_rate, key=ip_and_identity)
@blp.auth_required()
@blp.arguments(PasswordChangeSchema())
@blp.response(204)
def change_password(body):
    """Change the password; every token of the caller, this one included, stops working.

    `current_password` must be right (422 otherwise) and `new_password` different from it.
    Afterwards the caller logs in again with the new password. Limited like login.
    """
    auth.change_password(user=auth.current_user(current_user_id()), **body)
