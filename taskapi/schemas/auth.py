"""Auth and user schemas: bodies in (unknown fields refused), users and token pairs out."""

from marshmallow import Schema, fields, validate

from taskapi.models.user import ROLES
from taskapi.schemas.common import NO_CONTROL, PageQuerySchema, StrictBoolean, Text, Timestamp

NO_NUL = validate.Regexp(r"^[^\x00]*$", error="No NUL characters.")
PASSWORD = [validate.Length(min=8, max=128, error="Passwords are 8 to 128 characters."), NO_NUL]


def Name(**kwargs) -> Text:
    return Text(max_length=100, pattern=NO_CONTROL, pattern_error="No control characters.", trim=True, **kwargs)


class Email(fields.Email):
    """Trimmed and lower-cased before it is validated or stored."""

    def _deserialize(self, value, attr, data, **kwargs):
        return super()._deserialize(value, attr, data, **kwargs).strip().lower()


class RegisterSchema(Schema):
    email = Email(required=True, validate=validate.Length(max=254), metadata={"example": "ada@example.com"})
    password = fields.String(required=True, load_only=True, validate=PASSWORD, metadata={"example": "correct horse battery"})
    name = Name(load_default="", metadata={"example": "Ada Lovelace"})


class LoginSchema(Schema):
    email = Email(required=True, metadata={"example": "ada@example.com"})
    password = fields.String(required=True, load_only=True, validate=[validate.Length(min=1, max=128), NO_NUL],
                             metadata={"example": "correct horse battery"})


class UpdateMeSchema(Schema):
    name = Name(required=True, metadata={"example": "Ada King"})


class PasswordChangeSchema(Schema):
    current_password = fields.String(required=True, load_only=True, validate=[validate.Length(min=1, max=128), NO_NUL])
    new_password = fields.String(required=True, load_only=True, validate=PASSWORD)


class PasswordResetRequestSchema(Schema):
    email = Email(required=True, validate=validate.Length(max=254), metadata={"example": "ada@example.com"})


class PasswordResetConfirmSchema(Schema):
    token = fields.String(required=True, load_only=True, validate=[validate.Length(min=1, max=256), NO_NUL],
                          metadata={"description": "The token from the reset email's link."})
    new_password = fields.String(required=True, load_only=True, validate=PASSWORD,
                                 metadata={"example": "a new correct horse"})


class AcceptedSchema(Schema):
    detail = fields.String(required=True, metadata={"example": "If an active account has this email, a reset "
                                                               "link is on its way."})


class UserSchema(Schema):
    id = fields.String(attribute="_id", dump_only=True, metadata={"example": "6b0cf4e5d9870db21da3bdfa"})
    email = fields.String(dump_only=True)
    name = fields.String(dump_only=True)
    role = fields.String(dump_only=True, metadata={"enum": list(ROLES)})
    active = fields.Boolean(dump_only=True)
    created_at = Timestamp(dump_only=True)


class TokenPairSchema(Schema):
    access_token = fields.String(required=True)
    refresh_token = fields.String(required=True)
    token_type = fields.String(required=True, metadata={"example": "Bearer"})
    expires_in = fields.Integer(required=True, metadata={"description": "Access token lifetime in seconds."})


class UserQuerySchema(PageQuerySchema):
    email = fields.String(validate=validate.Length(min=1, max=254),
                          metadata={"description": "Exact email (case-insensitive)."})


class UserPageSchema(Schema):
    items = fields.List(fields.Nested(UserSchema), required=True)
    next_cursor = fields.String(required=True, allow_none=True)


class AdminUserPatchSchema(Schema):
    role = fields.String(validate=validate.OneOf(ROLES))
    active = StrictBoolean()
