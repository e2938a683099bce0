"""The typical synchronous stack: FastAPI + SQLModel + psycopg 3 (sync), an HS256 PyJWT
bearer check, one uvicorn worker; ``GET /items/{id}`` answers an item its owner asks for.

Written the way its tutorials write it (sync ``def`` endpoints run in the thread pool, one
session per request from a dependency). ``uvicorn --factory bench.peers.items:create_app``
with ``PEER_DATABASE_URL`` (``postgresql+psycopg://...``) and ``PEER_SECRET``; it creates its
table and seeds ``PEER_ITEMS`` items owned by ``owner-1`` at start-up.
"""

# No `from __future__ import annotations`: FastAPI must resolve the annotations of the
# dependencies defined inside create_app.

import os
import uuid
from collections.abc import Iterator
from typing import Annotated

import jwt
from fastapi import Depends, FastAPI, HTTPException
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine
from sqlmodel import Field, Session, SQLModel, create_engine, select

OWNER = "owner-1"


class Item(SQLModel, table=True):
    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    owner_id: str = Field(index=True)
    name: str
    description: str
    price: float
    quantity: int


def token_for(subject: str, secret: str) -> str:
    return jwt.encode({"sub": subject}, secret, algorithm="HS256")


def create_app() -> FastAPI:
    engine: Engine = create_engine(os.environ["PEER_DATABASE_URL"], pool_size=10)
    secret = os.environ["PEER_SECRET"]
    SQLModel.metadata.create_all(engine)
    with Session(engine) as session:
        if session.exec(select(Item).limit(1)).first() is None:
            for n in range(int(os.environ.get("PEER_ITEMS", "100"))):
                session.add(
                    Item(
                        owner_id=OWNER,
                        name=f"Item {n}",
                        description="An item.",
                        price=9.99,
                        quantity=n,
                    )
                )
            session.commit()
    app = FastAPI()
    bearer = HTTPBearer()

    def get_session() -> Iterator[Session]:
        with Session(engine) as session:
            yield session

    def current_user(
        credentials: Annotated[HTTPAuthorizationCredentials, Depends(bearer)],
    ) -> str:
        try:
            claims = jwt.decode(credentials.credentials, secret, algorithms=["HS256"])
        except jwt.InvalidTokenError as exc:
            raise HTTPException(401, "invalid token") from exc
        return str(claims["sub"])

    @app.get("/items", response_model=list[Item])
    def list_items(
        user: Annotated[str, Depends(current_user)],
        session: Annotated[Session, Depends(get_session)],
    ) -> list[Item]:
        return list(session.exec(select(Item).where(Item.owner_id == user).limit(20)))

    @app.get("/items/{item_id}", response_model=Item)
    def read_item(
        item_id: uuid.UUID,
        user: Annotated[str, Depends(current_user)],
        session: Annotated[Session, Depends(get_session)],
    ) -> Item:
        item = session.get(Item, item_id)
        if item is None or item.owner_id != user:
            raise HTTPException(404, "not found")
        return item

    return app
