"""CryptoPaymentService: validate, call the crypto payment domain, answer; errors via `@unary`."""

from __future__ import annotations

from typing import Any

import grpc
from nchat.entitlements.v1 import crypto_payment_service_pb2 as pb
from nchat.entitlements.v1 import crypto_payment_service_pb2_grpc as pb_grpc
from nchat.entitlements.v1 import plan_pb2

from entitlements.crypto import CryptoPayments, QuoteRequest
from entitlements.crypto.amounts import format_amount
from entitlements.errors import InvalidArgument
from entitlements.server import convert
from entitlements.server.status import unary
from entitlements.server.validation import require_id
from entitlements.store.crypto_repository import PaymentRecord
from entitlements.store.records import SubscriptionInterval

__all__ = ["CryptoPaymentServicer", "payment_message"]

Ctx = grpc.aio.ServicerContext[Any, Any]

_INTERVALS: dict[int, SubscriptionInterval] = {
    plan_pb2.BILLING_INTERVAL_MONTH: "month",
    plan_pb2.BILLING_INTERVAL_YEAR: "year",
}
_INTERVAL_VALUES = {name: value for value, name in _INTERVALS.items()}
STATUSES = {
    "pending": pb.CRYPTO_PAYMENT_STATUS_PENDING,
    "processing": pb.CRYPTO_PAYMENT_STATUS_PROCESSING,
    "confirmed": pb.CRYPTO_PAYMENT_STATUS_CONFIRMED,
    "expired": pb.CRYPTO_PAYMENT_STATUS_EXPIRED,
    "underpaid": pb.CRYPTO_PAYMENT_STATUS_UNDERPAID,
    "overpaid": pb.CRYPTO_PAYMENT_STATUS_OVERPAID,
    "paid_late": pb.CRYPTO_PAYMENT_STATUS_PAID_LATE,
}


def payment_message(p: PaymentRecord, revision: int = 0) -> pb.CryptoPayment:
    return pb.CryptoPayment(
        payment_id=p.id,
        account_id=p.account_id,
        plan_id=p.plan_id,
        interval=_INTERVAL_VALUES.get(p.interval, plan_pb2.BILLING_INTERVAL_UNSPECIFIED),  # type: ignore[call-overload]
        network=p.network,
        chain_id=p.chain_id,
        currency=p.currency,
        token_contract=p.token_contract,
        pay_to_address=p.pay_to_address,
        amount=format_amount(int(p.amount_base_units), p.decimals),
        amount_base_units=p.amount_base_units,
        decimals=p.decimals,
        price_cents=p.price_cents,
        status=STATUSES[p.status],
        created_at=convert.timestamp(p.created_at),
        expires_at=convert.timestamp(p.expires_at),
        tx_hash=p.tx_hash or "",
        confirmations=p.confirmations,
        required_confirmations=p.required_confirmations,
        received_amount=format_amount(int(p.received_base_units), p.decimals),
        confirmed_at=convert.timestamp(p.confirmed_at),
        payer_address=p.payer_address or "",
        revision=revision,
    )


class CryptoPaymentServicer(pb_grpc.CryptoPaymentServiceServicer):
    def __init__(self, payments: CryptoPayments) -> None:
        self.payments = payments

    @unary
    async def CreateCryptoPayment(
        self, request: pb.CreateCryptoPaymentRequest, context: Ctx
    ) -> pb.CreateCryptoPaymentResponse:
        account_id = require_id(request.account_id, "account_id")
        plan_id = require_id(request.plan_id, "plan_id")
        interval = _INTERVALS.get(request.interval)
        if interval is None:
            raise InvalidArgument(
                "interval", "must be BILLING_INTERVAL_MONTH or BILLING_INTERVAL_YEAR"
            )
        if not request.currency:
            raise InvalidArgument("currency", "is required")
        payment = await self.payments.create(
            QuoteRequest(
                account_id=account_id,
                plan_id=plan_id,
                interval=interval,
                network=request.network,
                currency=request.currency,
                payer_address=request.payer_address or None,
            )
        )
        return pb.CreateCryptoPaymentResponse(payment=payment_message(payment))

    @unary
    async def GetCryptoPayment(
        self, request: pb.GetCryptoPaymentRequest, context: Ctx
    ) -> pb.GetCryptoPaymentResponse:
        payment = await self.payments.get(require_id(request.payment_id, "payment_id"))
        return pb.GetCryptoPaymentResponse(
            payment=payment_message(payment, await self.payments.revision(payment))
        )

    @unary
    async def GetTransactionStatus(
        self, request: pb.GetTransactionStatusRequest, context: Ctx
    ) -> pb.GetTransactionStatusResponse:
        info = await self.payments.transaction(request.network, request.tx_hash)
        if not info.found:
            status = pb.TRANSACTION_STATUS_NOT_FOUND
        elif not info.succeeded:
            status = pb.TRANSACTION_STATUS_FAILED
        elif info.confirmations >= info.required_confirmations:
            status = pb.TRANSACTION_STATUS_CONFIRMED
        else:
            status = pb.TRANSACTION_STATUS_CONFIRMING
        return pb.GetTransactionStatusResponse(
            status=status,
            confirmations=info.confirmations,
            required_confirmations=info.required_confirmations,
            block_number=info.block_number,
            payment_id=info.payment_id,
            revision=info.revision,
        )
