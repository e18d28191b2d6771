<?php

declare(strict_types=1);

namespace WaBlast\Webhooks;

/**
 * No answer from the ingestion API (connection refused or cut, timeout).
 * The events may or may not have been stored: post them again only with
 * their ids, which the client does by itself when every event has one.
 */
final class TransportException extends \RuntimeException
{
}
