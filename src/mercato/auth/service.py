"""Use cases of the auth context: each opens its unit of work and commits it."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

import structlog
from sqlalchemy.exc import IntegrityError

from mercato.auth import domain
from mercato.auth.contracts import UserRegistered
from mercato.auth.mail import ResetMails, reset_message
from mercato.auth.models import PasswordResetRow, RefreshFamilyRow, RefreshTokenRow, UserRow
from mercato.auth.repository import (
    PasswordResetRepository,
    RefreshTokenRepository,
    UserRepository,
)
from mercato.auth.schemas import Me, RegisteredUser, RegisterRequest, TokenPair
from mercato.messaging import Outbox
from mercato.platform.db import Database, UnitOfWork
from mercato.platform.errors import AppError, Conflict, NotFound, Unauthorized
from mercato.platform.security.passwords import PasswordHasher
from mercato.platform.security.ratelimit import RateLimiter, TooManyRequests
from mercato.platform.security.tokens import TokenIssuer
from mercato.settings import Settings

log = structlog.stdlib.get_logger("mercato.auth")
security_log = structlog.stdlib.get_logger("mercato.security")

BAD_CREDENTIALS = "Invalid username or password."
BAD_REFRESH = "The refresh token is invalid, expired or revoked."
BAD_RESET_TOKEN = "The reset link is invalid, used or expired; ask for a new one."  # noqa: S105
WRONG_CURRENT_PASSWORD = "The current password is wrong."  # noqa: S105


LoginOutcome = Literal["success", "failure", "rate_limited"]


def _uncounted(_outcome: LoginOutcome) -> None:
    """No login metrics (a service built without a registry, as in unit tests)."""


class InvalidResetToken(AppError):
    slug = "invalid-reset-token"


class WrongCurrentPassword(AppError):
    slug = "wrong-current-password"


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Authenticated:
    user_id: str
    roles: list[str]
    new_hash: str | None  # the password hash upgraded to the current parameters


@dataclass(frozen=True, slots=True)
class RefreshRefused:
    reason: str  # revoked, reused, expired, unknown, inactive


class Accounts:
    """Creating accounts: needs only the password hasher and the outbox that announces
    them (the CLI uses it alone)."""

    def __init__(self, hasher: PasswordHasher, outbox: Outbox) -> None:
        self.hasher = hasher
        self.outbox = outbox

    # --- registration -------------------------------------------------------------------

    async def register(self, db: Database, data: RegisterRequest) -> RegisteredUser:
        """Create a customer account and announce ``user.registered``; 409 if the username
        or the e-mail is taken (whatever its case)."""
        async with db.unit_of_work() as uow:
            user = await self._add_account(uow, data, roles=domain.DEFAULT_ROLES)
            await uow.commit()
        return RegisteredUser(
            id=user.id, username=user.username, email=user.email, created_at=user.created_at
        )

    async def _add_account(
        self, uow: UnitOfWork, data: RegisterRequest, *, roles: tuple[str, ...]
    ) -> UserRow:
        """The account row and its ``user.registered`` event, in the caller's unit of work."""
        password_hash = await self.hasher.hash(data.password)
        users = UserRepository(uow.session)
        username_key, email_key = domain.username_key(data.username), domain.email_key(data.email)
        username_taken, email_taken = await users.taken(username_key, email_key)
        if username_taken:
            raise Conflict("This username is already registered.", field="username")
        if email_taken:
            raise Conflict("This e-mail address is already registered.", field="email")
        now = utcnow()
        user = UserRow(
            id=str(uuid.uuid4()),
            username=data.username,
            username_key=username_key,
            email=data.email,
            email_key=email_key,
            password_hash=password_hash,
            roles=sorted(roles),
            is_active=True,
            created_at=now,
            updated_at=now,
        )
        users.add(user)
        try:
            await users.flush()
        except IntegrityError:  # a concurrent registration won the race
            raise Conflict("This username or e-mail address is already registered.") from None
        await self.outbox.publish(
            uow,
            UserRegistered(
                user_id=user.id,
                **data.model_dump(exclude={"password"}),
                roles=list(user.roles),
                created_at=now,
            ),
            key=user.id,
        )
        return user

    async def ensure_admin(
        self, db: Database, username: str, password: str, *, email: str | None = None
    ) -> tuple[UserRow, bool]:
        """Make sure ``username`` exists with the admin role (created with ``password`` if
        missing; an existing account is promoted and keeps its password). Answers the user
        and whether it was created."""
        if problem := domain.username_problem(username):
            raise ValueError(f"admin username {problem}")
        async with db.unit_of_work() as uow:
            users = UserRepository(uow.session)
            user = await users.by_username_key(domain.username_key(username))
            created = user is None
            if user is None:
                if problem := domain.password_problem(password):
                    raise ValueError(f"admin password {problem}")
                data = RegisterRequest(
                    username=username,
                    email=email or f"{username.lower()}@admin.mercato.example",
                    password=password,
                )
                user = await self._add_account(uow, data, roles=(domain.ADMIN, domain.CUSTOMER))
            elif domain.ADMIN not in user.roles:
                user.roles = sorted({*user.roles, domain.ADMIN})
                user.updated_at = utcnow()
            await uow.commit()
        return user, created


class AuthService:
    """The auth use cases, with the adapters they need (built once per app)."""

    def __init__(
        self,
        settings: Settings,
        *,
        hasher: PasswordHasher,
        issuer: TokenIssuer,
        limiter: RateLimiter,
        outbox: Outbox,
        mails: ResetMails,
        clock: Callable[[], datetime] = utcnow,
        login_attempts: Callable[[LoginOutcome], None] = _uncounted,
    ) -> None:
        self.settings = settings
        self.login_attempts = login_attempts
        self.hasher = hasher
        self.issuer = issuer
        self.limiter = limiter
        self.accounts = Accounts(hasher, outbox)
        self.mails = mails
        self.clock = clock  # password reset reads it (tests move it to expire a link)

    async def bootstrap_admin(self, db: Database) -> None:
        """Ensure ``MERCATO_ADMIN_USERNAME`` exists with the admin role, when it is set."""
        settings = self.settings
        if not settings.admin_username or settings.admin_password is None:
            return
        username, password = settings.admin_username, settings.admin_password.get_secret_value()
        try:
            user, created = await self.accounts.ensure_admin(db, username, password)
        except Conflict:
            # Another instance starting beside this one (a gunicorn worker) created the
            # admin between the look-up and the insert: ensure it again, now it exists.
            user, created = await self.accounts.ensure_admin(db, username, password)
        log.info("admin ensured", user_id=user.id, username=user.username, created=created)

    # --- login --------------------------------------------------------------------------

    async def login(self, db: Database, username: str, password: str, *, client: str) -> TokenPair:
        """A token pair for good credentials, under both login limits (429, or 503 when the
        limit storage is down); the same 401 for any bad credentials. Each attempt that got
        an answer about the credentials or the limit is counted by ``login_attempts``."""
        try:
            await self._check_login_limits(username, client)
        except TooManyRequests:
            self.login_attempts("rate_limited")
            raise
        # The slow password check runs in a read-only unit of work, so that it holds no
        # write lock (SQLite); only the new session is written.
        async with db.unit_of_work(read_only=True) as uow:
            try:
                who = await self._authenticate(uow, username, password, client=client)
            except Unauthorized:
                self.login_attempts("failure")
                raise
        async with db.unit_of_work() as uow:
            pair = await self._start_session(uow, who, client=client)
            await uow.commit()
        self.login_attempts("success")
        return pair

    async def _check_login_limits(self, username: str, client: str) -> None:
        """Count the attempt against both login limits; 429 (or 503 when the limit storage
        is down) past either."""
        subject = ("login", domain.username_key(username))
        await self._check_password_limits(
            client, subject, "Too many login attempts; try again later.", username=username
        )

    async def _check_password_limits(
        self, client: str, subject: tuple[str, ...], refusal: str, **who: str
    ) -> None:
        """The login limits, for any check of a password: ``RATE_LIMIT_LOGIN`` per
        ``subject`` and client, ``RATE_LIMIT_LOGIN_ADDRESS`` per client."""
        await self._check_limits(
            ("login_address", self.settings.rate_limit_login_address, ("login-address", client)),
            ("login", self.settings.rate_limit_login, (*subject, client)),
            refusal=refusal,
            client=client,
            **who,
        )

    async def _check_limits(
        self, *limits: tuple[str, str, tuple[str, ...]], refusal: str, **who: str | None
    ) -> None:
        """Count one attempt against each ``(name, limit, key parts)``; 429 (or 503 when the
        limit storage is down) with ``refusal`` past any, logged with ``who``."""
        for name, limit, parts in limits:
            result = await self.limiter.hit(limit, *parts, name=name)
            if not result.allowed:
                security_log.warning(
                    "security.rate_limited",
                    outcome="storage-unavailable" if result.unavailable else "refused",
                    limit=limit,
                    **who,
                )
                result.raise_for_refusal(refusal)

    async def _authenticate(
        self, uow: UnitOfWork, username: str, password: str, *, client: str
    ) -> Authenticated:
        """Check the credentials; the same 401 (after the same work) for an unknown user,
        an inactive one and a wrong password."""
        user = await UserRepository(uow.session).by_username_key(domain.username_key(username))
        check = await self.hasher.verify(password, user.password_hash if user else None)
        if user is None or not check.ok or not user.is_active:
            security_log.warning(
                "security.login_failed",
                outcome="refused",
                username=username,
                user_id=user.id if user else None,
                client=client,
            )
            raise Unauthorized(BAD_CREDENTIALS)
        return Authenticated(user_id=user.id, roles=list(user.roles), new_hash=check.new_hash)

    async def _start_session(
        self, uow: UnitOfWork, who: Authenticated, *, client: str
    ) -> TokenPair:
        """A new refresh-token family and a token pair (and the upgraded hash, if any)."""
        now = utcnow()
        if who.new_hash is not None:
            user = await UserRepository(uow.session).get(who.user_id)
            if user is not None:
                user.password_hash = who.new_hash
                user.updated_at = now
        family = RefreshFamilyRow(id=str(uuid.uuid4()), user_id=who.user_id, created_at=now)
        tokens = RefreshTokenRepository(uow.session)
        tokens.add_family(family)
        await uow.session.flush()
        refresh_token = self._new_refresh_token(tokens, family.id, now)
        security_log.info("security.login_ok", outcome="ok", user_id=who.user_id, client=client)
        return self._pair(who.user_id, who.roles, refresh_token, family.id)

    def _new_refresh_token(
        self, tokens: RefreshTokenRepository, family_id: str, now: datetime
    ) -> str:
        token = domain.new_refresh_token()
        tokens.add_token(
            RefreshTokenRow(
                token_hash=domain.refresh_token_hash(token),
                family_id=family_id,
                created_at=now,
                expires_at=now + timedelta(seconds=self.settings.refresh_token_ttl),
            )
        )
        return token

    def _pair(
        self, user_id: str, roles: list[str], refresh_token: str, family_id: str
    ) -> TokenPair:
        """The pair of one session: the access token names its family (``sid``), so that
        a password change can keep the caller's own session alive."""
        access = self.issuer.issue(user_id, roles, session_id=domain.session_id(family_id))
        return TokenPair(
            access_token=access.token, refresh_token=refresh_token, expires_in=access.expires_in
        )

    # --- refresh and logout -------------------------------------------------------------

    async def refresh(self, db: Database, refresh_token: str, *, client: str) -> TokenPair:
        """Rotate ``refresh_token``; 401 if it is invalid, expired or revoked. Presenting one
        already rotated revokes its family (reuse detection)."""
        async with db.unit_of_work() as uow:
            outcome = await self._rotate(uow, refresh_token, client=client)
            await uow.commit()  # also when refused: a reuse revokes the family for good
        if isinstance(outcome, RefreshRefused):
            raise Unauthorized(BAD_REFRESH)
        return outcome

    async def _rotate(
        self, uow: UnitOfWork, refresh_token: str, *, client: str
    ) -> TokenPair | RefreshRefused:
        now = utcnow()
        tokens = RefreshTokenRepository(uow.session)
        found = await tokens.get_for_update(domain.refresh_token_hash(refresh_token))
        if found is None:
            return self._refused("unknown", client)
        row, family = found
        state = domain.RefreshState(
            family_revoked=family.revoked_at is not None,
            used=row.used_at is not None,
            expires_at=row.expires_at,
        )
        verdict = state.verdict(now)
        if verdict == "ok" and not await tokens.mark_used(row.token_hash, now):
            verdict = "reused"  # rotated concurrently by another request
        if verdict == "reused":
            await tokens.revoke_family(family.id, now, "reuse")
            security_log.warning(
                "security.refresh_reuse",
                outcome="family-revoked",
                user_id=family.user_id,
                family_id=family.id,
                client=client,
            )
            return RefreshRefused("reused")
        if verdict != "ok":
            return self._refused(verdict, client, user_id=family.user_id)
        user = await UserRepository(uow.session).get(family.user_id)
        if user is None or not user.is_active:
            await tokens.revoke_family(family.id, now, "inactive")
            return self._refused("inactive", client, user_id=family.user_id)
        new_token = self._new_refresh_token(tokens, family.id, now)
        security_log.info("security.refresh_ok", outcome="ok", user_id=user.id, client=client)
        return self._pair(user.id, list(user.roles), new_token, family.id)

    @staticmethod
    def _refused(reason: str, client: str, user_id: str | None = None) -> RefreshRefused:
        security_log.warning(
            "security.refresh_refused",
            outcome="refused",
            reason=reason,
            user_id=user_id,
            client=client,
        )
        return RefreshRefused(reason)

    async def logout(self, db: Database, user_id: str, refresh_token: str, *, client: str) -> None:
        """Revoke the family of ``refresh_token`` if it is the caller's (else do nothing,
        revealing nothing)."""
        async with db.unit_of_work() as uow:
            tokens = RefreshTokenRepository(uow.session)
            found = await tokens.get_for_update(domain.refresh_token_hash(refresh_token))
            if found is None or found[1].user_id != user_id:
                return
            await tokens.revoke_family(found[1].id, utcnow(), "logout")
            await uow.commit()
        security_log.info("security.logout", outcome="ok", user_id=user_id, client=client)

    # --- password reset and change -------------------------------------------------------

    async def forgot_password(self, db: Database, email: str, *, client: str) -> None:
        """Mail a reset link to ``email`` if an active account has it, superseding the
        links mailed before; the same work and no answer either way (the route says 202),
        so nobody learns whether an address is registered. The mail leaves after the
        commit, in the background (:mod:`mercato.auth.mail`). 429 past the limits."""
        key = domain.email_key(email)
        await self._check_reset_limits(client, ("password-forgot", key))
        # A token and its digest also for an unknown address: the same work either way.
        token = domain.new_reset_token()
        token_hash = domain.reset_token_hash(token)
        now = self.clock()
        async with db.unit_of_work() as uow:
            found = await UserRepository(uow.session).by_email_key(key)
            user = found if found is not None and found.is_active else None
            resets = PasswordResetRepository(uow.session)
            await resets.supersede_unused(user.id if user else "", now)
            if user is not None:
                self._decide_reset_mail(uow, resets, user, token, token_hash, now)
            await uow.commit()
        security_log.info(
            "security.password_reset_requested",
            outcome="mailed" if user else "no-account",
            user_id=user.id if user else None,
            client=client,
        )

    def _decide_reset_mail(
        self,
        uow: UnitOfWork,
        resets: PasswordResetRepository,
        user: UserRow,
        token: str,
        token_hash: str,
        now: datetime,
    ) -> None:
        """Store the token's digest and have its mail sent once ``uow`` committed."""
        ttl = self.settings.password_reset_ttl
        reset = PasswordResetRow(
            id=str(uuid.uuid4()),
            user_id=user.id,
            token_hash=token_hash,
            created_at=now,
            expires_at=now + timedelta(seconds=ttl),
        )
        resets.add(reset)
        public_url = self.settings.public_url or self.settings.service_url("gateway")
        message = reset_message(
            sender=self.settings.mail_from,
            to=user.email,
            username=user.username,
            link=domain.reset_link(public_url, token),
            valid_for=ttl,
            now=now,
        )
        name, user_id = f"password-reset-{reset.id}", user.id
        uow.after_commit(lambda: self.mails.send_soon(message, name=name, user_id=user_id))

    async def _check_reset_limits(self, client: str, *per_subject: tuple[str, ...]) -> None:
        """The client's reset limit, and the per-address one for each of ``per_subject``."""
        settings = self.settings
        await self._check_limits(
            (
                "password_reset_address",
                settings.rate_limit_password_reset_address,
                ("password-reset-address", client),
            ),
            *(("password_reset", settings.rate_limit_password_reset, p) for p in per_subject),
            refusal="Too many password-reset requests; try again later.",
            client=client,
        )

    async def reset_password(
        self, db: Database, token: str, new_password: str, *, client: str
    ) -> None:
        """Set the password of the token's account and kill the token (once: of two
        concurrent resets one wins), its other tokens and every refresh-token family of the
        account; 400 for an unknown, used, superseded or expired token."""
        await self._check_reset_limits(client)
        new_hash = await self.hasher.hash(new_password)  # the slow part, before the writes
        token_hash = domain.reset_token_hash(token)
        async with db.unit_of_work() as uow:
            now = self.clock()
            resets = PasswordResetRepository(uow.session)
            found = await resets.by_token_hash(token_hash)
            user = await UserRepository(uow.session).get(found.user_id) if found else None
            if (
                found is None
                or user is None
                or not user.is_active
                or not domain.ResetState(found.expires_at, found.used_at).usable(now)
                or not await resets.use(token_hash, now)
            ):
                security_log.warning(
                    "security.password_reset_refused",
                    outcome="refused",
                    user_id=found.user_id if found else None,
                    client=client,
                )
                raise InvalidResetToken(BAD_RESET_TOKEN)
            await resets.supersede_unused(user.id, now)
            user.password_hash, user.updated_at = new_hash, now
            await RefreshTokenRepository(uow.session).revoke_families_of(
                user.id, now, "password-reset"
            )
            await uow.commit()
        security_log.info(
            "security.password_reset", outcome="ok", user_id=found.user_id, client=client
        )

    async def change_password(
        self,
        db: Database,
        user_id: str,
        current_password: str,
        new_password: str,
        *,
        session_id: str | None,
        client: str,
    ) -> None:
        """Replace the caller's password, checking the current one under the login limits
        (400 when it is wrong), and revoke every refresh-token family of the account but
        ``session_id`` (the caller's: the access token's ``sid``; all of them when the
        token names none)."""
        await self._check_password_limits(
            client,
            ("password-change", user_id),
            "Too many password attempts; try again later.",
            user_id=user_id,
        )
        async with db.unit_of_work(read_only=True) as uow:  # no write lock while hashing
            user = await UserRepository(uow.session).get(user_id)
            active = user is not None and user.is_active
            old_hash = user.password_hash if user is not None else None
            check = await self.hasher.verify(current_password, old_hash)
        if old_hash is None or not check.ok or not active:
            security_log.warning(
                "security.password_change_refused",
                outcome="refused",
                user_id=user_id,
                client=client,
            )
            raise WrongCurrentPassword(WRONG_CURRENT_PASSWORD)
        new_hash = await self.hasher.hash(new_password)
        async with db.unit_of_work() as uow:
            now = utcnow()
            users = UserRepository(uow.session)
            if not await users.replace_password_hash(user_id, old=old_hash, new=new_hash, now=now):
                raise WrongCurrentPassword(WRONG_CURRENT_PASSWORD)  # changed meanwhile
            await RefreshTokenRepository(uow.session).revoke_families_of(
                user_id, now, "password-change", keep=domain.family_of_session(session_id)
            )
            await PasswordResetRepository(uow.session).supersede_unused(user_id, now)
            await uow.commit()
        security_log.info("security.password_changed", outcome="ok", user_id=user_id, client=client)

    # --- reads and administration -------------------------------------------------------

    async def me(self, db: Database, user_id: str) -> Me:
        """The caller's own account; 404 if it is gone."""
        async with db.unit_of_work(read_only=True) as uow:
            user = await UserRepository(uow.session).get(user_id)
            if user is None:
                raise NotFound("No such user.")
            return Me(id=user.id, username=user.username, email=user.email, roles=list(user.roles))
