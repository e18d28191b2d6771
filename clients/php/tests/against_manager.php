<?php
// Runs the PHP client against a running manager; test/integration's
// TestThePHPClientAgainstTheIngestionAPI starts one and checks that what
// this script posted arrived with its content. Environment:
//   WABLAST_URL, WABLAST_TOKEN, WABLAST_NAMESPACE  the ingestion API
//   WABLAST_EVENTS       NDJSON file of events with ids: the first is posted
//                        alone (twice), the rest as one batch
//   WABLAST_RETRY_EVENT  JSON of one event, posted through WABLAST_PROXY_URL,
//                        which answers 503 with Retry-After: 1 once
//   WABLAST_SENT         file to write, one line per event, the JSON the
//                        client sent for each (PHP's own number formatting),
//                        for the receiver to check what arrived against
// Prints "ok <check>" per check, and exits 1 at the first that fails.

declare(strict_types=1);

require __DIR__ . '/../autoload.php';

use WaBlast\Webhooks\ApiException;
use WaBlast\Webhooks\Client;
use WaBlast\Webhooks\TransportException;

function env(string $name): string
{
    $v = getenv($name);
    if ($v === false || $v === '') {
        fwrite(STDERR, "missing $name\n");
        exit(2);
    }
    return $v;
}

function check(bool $ok, string $name, string $detail = ''): void
{
    if (!$ok) {
        echo "FAIL $name $detail\n";
        exit(1);
    }
    echo "ok $name\n";
}

/** @return array{0:Client,1:list<float>} a client whose waits are recorded (and slept). */
function recording(string $url, string $token, int $maxAttempts = 6, float $min = 0.5, float $max = 30.0): array
{
    $waits = new ArrayObject();
    $client = new Client($url, $token, $maxAttempts, $min, $max, 30.0, static function (float $s) use ($waits): void {
        $waits[] = $s;
        usleep((int) round($s * 1e6));
    });
    return [$client, $waits];
}

$url = env('WABLAST_URL');
$token = env('WABLAST_TOKEN');
$ns = env('WABLAST_NAMESPACE');
// Objects stay objects (an empty {} is not a PHP array), as an app that
// builds its data with arrays and \stdClass would send them.
function decodeEvent(string $json): array
{
    return (array) json_decode($json, false, 512, JSON_THROW_ON_ERROR);
}
$events = [];
$sent = '';
foreach (file(env('WABLAST_EVENTS'), FILE_IGNORE_NEW_LINES | FILE_SKIP_EMPTY_LINES) as $line) {
    $events[] = decodeEvent($line);
    $sent .= Client::encode(end($events)) . "\n";
}

[$client, $waits] = recording($url, $token);

$first = array_shift($events);
$res = $client->post($ns, $first);
check($res['id'] === $first['id'] && $res['subscribers'] === 1 && empty($res['duplicate']), 'post one event', json_encode($res));
$res = $client->post($ns, $first);
check(($res['duplicate'] ?? false) === true && $res['id'] === $first['id'], 'the same id again is a duplicate', json_encode($res));

$answers = $client->postBatch($ns, $events);
$ids = array_map(static fn (array $a): string => $a['id'], $answers);
check($ids === array_column($events, 'id'), 'a batch, answered in order', json_encode(array_slice($ids, 0, 3)));

try {
    $client->post($ns, ['id' => 'php-bad', 'type' => 'message.sent', 'data' => ['messageId' => 'm-1', 'sessionId' => 's-1', 'to' => '0812']]);
    check(false, 'a schema violation is an ApiException');
} catch (ApiException $e) {
    check($e->statusCode === 422 && $e->errorCode === 'schema_violation' && str_contains($e->getMessage(), '/to') && !$e->isRetryable()
        && count($e->violations) === 1 && $e->violations[0]['pointer'] === '/to',
        'a schema violation is a typed ApiException', $e->getMessage());
}
try {
    $client->postBatch($ns, [$first, ['id' => 'php-x', 'type' => 'message.read', 'data' => []]]);
    check(false, 'a bad batch line is an ApiException');
} catch (ApiException $e) {
    check($e->statusCode === 400 && $e->errorCode === 'invalid_batch' && $e->lines === [2], 'a bad batch line is named', $e->getMessage());
}
check(count($waits) === 0, 'client errors are not retried', json_encode($waits->getArrayCopy()));

try {
    (new Client($url, 'not-a-token-of-this-namespace-0123456789'))->post($ns, $first);
    check(false, 'an unknown token is an ApiException');
} catch (ApiException $e) {
    check($e->statusCode === 401 && $e->errorCode === 'unauthenticated', 'an unknown token is a 401', $e->getMessage());
}

// A 503 with Retry-After: 1 is waited out and posted again.
[$viaProxy, $proxyWaits] = recording(env('WABLAST_PROXY_URL'), $token);
$retry = decodeEvent(env('WABLAST_RETRY_EVENT'));
$sent .= Client::encode($retry) . "\n";
file_put_contents(env('WABLAST_SENT'), $sent);
$res = $viaProxy->post($ns, $retry);
check($res['id'] === $retry['id'] && empty($res['duplicate']) && $proxyWaits->getArrayCopy() === [1.0],
    'a 503 is retried after its Retry-After', json_encode([$res, $proxyWaits->getArrayCopy()]));

// No answer at all: retried only when every event has an id.
[$down, $downWaits] = recording('http://127.0.0.1:1', $token, 3, 0.01, 0.03);
try {
    $down->post($ns, ['type' => 'message.sent', 'data' => ['messageId' => 'm-1', 'sessionId' => 's-1', 'to' => '+6281234567890']]);
    check(false, 'no answer is a TransportException');
} catch (TransportException $e) {
    check(count($downWaits) === 0, 'no answer, no id: not retried', json_encode($downWaits->getArrayCopy()));
}
try {
    $down->post($ns, $first);
    check(false, 'no answer is a TransportException');
} catch (TransportException $e) {
    check(count($downWaits) === 2, 'no answer, with an id: retried up to the attempts', json_encode($downWaits->getArrayCopy()));
}

// The backoff without Retry-After: doubled, capped, jittered.
$c = new Client($url, $token, 6, 0.1, 0.3);
$seen = [];
$outside = [];
for ($attempt = 1; $attempt <= 5; $attempt++) {
    $ceiling = min(0.1 * 2 ** ($attempt - 1), 0.3);
    for ($i = 0; $i < 20; $i++) {
        $d = $c->backoff($attempt);
        if ($d < $ceiling / 2 - 1e-9 || $d > $ceiling + 1e-9) {
            $outside[] = "attempt $attempt: $d";
        }
        $seen[(string) $d] = true;
    }
}
check($outside === [], 'the backoff doubles from minBackoff up to maxBackoff, a random half to all of it', implode(', ', $outside));
check(count($seen) > 20, 'the backoff is jittered', (string) count($seen));
echo "done\n";
