from twisted.application.service import ServiceMaker

chatd = ServiceMaker(
    "chatd", "chatd.service", "one chat room for telnet, web and minechat", "chatd"
)
