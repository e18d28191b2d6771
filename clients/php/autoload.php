<?php
// PSR-4 autoloading without Composer: require this file, then use
// WaBlast\Webhooks\Client. With Composer, its autoloader does the same.
spl_autoload_register(static function (string $class): void {
    $prefix = 'WaBlast\\Webhooks\\';
    if (strncmp($class, $prefix, strlen($prefix)) !== 0) {
        return;
    }
    $file = __DIR__ . '/src/' . str_replace('\\', '/', substr($class, strlen($prefix))) . '.php';
    if (is_file($file)) {
        require $file;
    }
});
