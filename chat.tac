# Run with: twistd -ny chat.tac   (settings from chatd.ini next to it, when there is one)
import os

from twisted.application import service

from chatd.service import Options, makeService

options = Options()
options.parseOptions(["--config", "chatd.ini"] if os.path.exists("chatd.ini") else [])
application = service.Application("chatd")
makeService(options).setServiceParent(application)
