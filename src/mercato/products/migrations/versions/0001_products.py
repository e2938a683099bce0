"""The catalogue and the stock reservations of orders."""

import sqlalchemy as sa
from alembic import op

revision = "0001_products"
down_revision = None

TRIGRAM_INDEXES = {"ix_products_name_trgm": "name", "ix_products_description_trgm": "description"}
#: The schema pg_trgm is installed in (none when it is not), to name its operator class.
TRIGRAM_SCHEMA = sa.text(
    "SELECT n.nspname FROM pg_extension e "
    "JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'pg_trgm'"
)


def upgrade() -> None:
    op.create_table(
        "products",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("sku", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        # Whole cents on SQLite, which has no exact decimal type (models.Money).
        sa.Column("price", sa.Numeric(12, 2).with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("category", sa.String(64), nullable=False),
        sa.Column("stock", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("stock >= 0", name=op.f("ck_products_stock_not_negative")),
        sa.CheckConstraint("price > 0", name=op.f("ck_products_price_positive")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_products")),
        sa.UniqueConstraint("sku", name=op.f("uq_products_sku")),
    )
    op.create_index("ix_products_category_price", "products", ["category", "price"])
    op.create_index("ix_products_created_at", "products", ["created_at"])
    op.create_index("ix_products_price", "products", ["price"])
    op.create_index("ix_products_name", "products", ["name"])

    op.create_table(
        "stock_reservations",
        sa.Column("order_id", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("order_id", name=op.f("pk_stock_reservations")),
    )
    op.create_table(
        "stock_reservation_lines",
        sa.Column("order_id", sa.String(64), nullable=False),
        sa.Column("product_id", sa.String(64), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            "quantity > 0", name=op.f("ck_stock_reservation_lines_quantity_positive")
        ),
        sa.ForeignKeyConstraint(
            ["order_id"],
            ["stock_reservations.order_id"],
            name=op.f("fk_stock_reservation_lines_order_id_stock_reservations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("order_id", "product_id", name=op.f("pk_stock_reservation_lines")),
    )
    if op.get_bind().dialect.name == "postgresql":
        _create_trigram_indexes()


def _create_trigram_indexes() -> None:
    """Trigram GIN indexes keep ``ILIKE '%text%'`` search fast on a large catalogue.

    ``pg_trgm`` is a trusted extension (PostgreSQL 13+), so the database owner can create
    it. Where it cannot be created, search still works, only without the index.
    """
    bind = op.get_bind()
    schema = bind.execute(TRIGRAM_SCHEMA).scalar()
    if schema is None:
        savepoint = bind.begin_nested()
        try:
            bind.execute(sa.text("CREATE EXTENSION IF NOT EXISTS pg_trgm"))
        except sa.exc.DBAPIError:
            savepoint.rollback()
            return
        savepoint.commit()
        schema = bind.execute(TRIGRAM_SCHEMA).scalar()
    opclass = f'"{schema}".gin_trgm_ops'
    for index, column in TRIGRAM_INDEXES.items():
        bind.execute(sa.text(f"CREATE INDEX {index} ON products USING gin ({column} {opclass})"))


def downgrade() -> None:
    op.drop_table("stock_reservation_lines")
    op.drop_table("stock_reservations")
    op.drop_table("products")
