<?php
// Default page of the imagekit web image: proves Nginx hands PHP to PHP-FPM,
// and shows whether user data gave the application its database settings.
header('Content-Type: text/plain');
echo "imagekit web: PHP " . PHP_VERSION . " on " . gethostname() . "\n";
$app = @parse_ini_file('/etc/imagekit/app.ini', true);
if ($app && isset($app['database'])) {
    echo "database: " . $app['database']['user'] . "@" . $app['database']['host'] . "/" . $app['database']['name'] . "\n";
} else {
    echo "database: not configured\n";
}
