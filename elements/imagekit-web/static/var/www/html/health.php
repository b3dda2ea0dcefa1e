<?php
// The load balancer's health check: Nginx and PHP-FPM answer. It writes
// nothing (index.php records a visit per request).
header('Content-Type: text/plain');
echo "ok\n";
